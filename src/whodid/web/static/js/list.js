// The list of entries: a real table whose rows take focus one at a time
// (a "roving" tabindex), so Tab enters the list once and leaves it once,
// the arrow keys move between rows, and Enter opens the focused row.

import { copyButton, h } from "./dom.js";
import { actorBadge, actorOf, aggregateOf, passkeyMark } from "./format.js";
import { isoInZone, relativeTime } from "./time.js";

export class EntryList {
  /** onOpen(id, row): show an entry. onFilter(partialState): narrow the list. */
  constructor(tbody, { zone, onOpen, onFilter }) {
    this.tbody = tbody;
    this.zone = zone;
    this.onOpen = onOpen;
    this.onFilter = onFilter;
    this.entries = [];
    tbody.addEventListener("keydown", (event) => this.keydown(event));
    tbody.addEventListener("click", (event) => this.click(event));
    tbody.addEventListener("focusin", (event) => {
      const row = event.target.closest("tr");
      if (row) this.activate(row);
    });
  }

  get rows() {
    return [...this.tbody.rows];
  }

  clear() {
    this.entries = [];
    this.tbody.replaceChildren();
  }

  /** Add entries at the end; returns the first new row (or null). */
  append(entries) {
    const rows = entries.map((entry) => this.row(entry));
    this.entries.push(...entries);
    rows.forEach((row) => this.deactivate(row));
    this.tbody.append(...rows);
    if (!this.tbody.querySelector('tr[tabindex="0"]') && rows.length) this.activate(rows[0]);
    return rows[0] || null;
  }

  row(entry) {
    const actor = actorOf(entry);
    const aggregate = aggregateOf(entry);
    const when = new Date(entry.occurred_at);
    return h(
      "tr",
      // Explicit roles: narrow screens lay rows out as cards (CSS grid), which
      // some browsers take as leaving the table.
      { tabindex: "-1", role: "row", dataset: { id: entry.id } },
      h(
        "td",
        { class: "col-event", role: "cell" },
        h(
          "span",
          { class: "event" },
          h("code", { class: "action" }, entry.action),
          copyButton(entry.action, `event name ${entry.action}`),
        ),
      ),
      h(
        "td",
        { class: "col-actor", role: "cell" },
        h(
          "span",
          { class: "actor" },
          actorBadge(actor.type, actor.typeLabel),
          h("span", { class: `actor-name${actor.type === "api_key" ? " mono" : ""}` }, actor.name),
          entry.passkey ? passkeyMark() : null,
          actor.detail ? h("span", { class: "actor-detail" }, actor.detail) : null,
        ),
      ),
      h(
        "td",
        { class: "col-aggregate", role: "cell" },
        aggregate
          ? h(
              "button",
              {
                type: "button",
                class: "aggregate",
                title: `Show only entries for ${aggregate}`,
                "aria-label": `${aggregate}: show only entries for this resource`,
                dataset: { entity: entry.entity_id || "" },
              },
              aggregate,
            )
          : h("span", { class: "muted" }, "—"),
      ),
      h(
        "td",
        { class: "col-when", role: "cell" },
        h(
          "time",
          { datetime: entry.occurred_at, title: isoInZone(when, this.zone()) },
          relativeTime(when),
        ),
      ),
    );
  }

  /** Refresh relative times and hover titles (every minute, or on a zone change). */
  refreshTimes() {
    const zone = this.zone();
    for (const time of this.tbody.querySelectorAll("time")) {
      const when = new Date(time.dateTime);
      time.textContent = relativeTime(when);
      time.title = isoInZone(when, zone);
    }
  }

  // -- focus -------------------------------------------------------------------

  activate(row) {
    for (const other of this.tbody.querySelectorAll('tr[tabindex="0"]')) {
      if (other !== row) this.deactivate(other);
    }
    row.tabIndex = 0;
    for (const control of row.querySelectorAll("button")) control.tabIndex = 0;
  }

  deactivate(row) {
    row.tabIndex = -1;
    for (const control of row.querySelectorAll("button")) control.tabIndex = -1;
  }

  focusRow(row) {
    if (!row) return;
    this.activate(row);
    row.focus();
  }

  focusEntry(id) {
    const row = this.rows.find((r) => r.dataset.id === id);
    if (row) this.focusRow(row);
    return Boolean(row);
  }

  keydown(event) {
    const row = event.target.closest("tr");
    if (!row) return;
    const rows = this.rows;
    const index = rows.indexOf(row);
    const moves = {
      ArrowDown: index + 1,
      ArrowUp: index - 1,
      Home: 0,
      End: rows.length - 1,
      PageDown: index + 10,
      PageUp: index - 10,
    };
    if (event.key in moves) {
      event.preventDefault();
      this.focusRow(rows[Math.max(0, Math.min(rows.length - 1, moves[event.key]))]);
    } else if ((event.key === "Enter" || event.key === " ") && event.target === row) {
      event.preventDefault();
      this.onOpen(row.dataset.id, row);
    }
  }

  click(event) {
    const aggregate = event.target.closest("button.aggregate");
    if (aggregate) {
      event.stopPropagation();
      if (aggregate.dataset.entity) this.onFilter({ entity_id: aggregate.dataset.entity });
      return;
    }
    if (event.target.closest("button")) return; // a copy button handles itself
    // Selecting text (to copy an id) is not a request to open the entry.
    if (String(window.getSelection()).length > 0) return;
    const row = event.target.closest("tr");
    if (row) this.onOpen(row.dataset.id, row);
  }
}
