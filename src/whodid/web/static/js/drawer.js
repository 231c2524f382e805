// The detail drawer: one entry with its full request context, read-only.
// A native modal <dialog> gives the focus trap, Escape and an inert page for
// free; we only put focus back where it was when the drawer closes.

import { ApiError, getJson, urls } from "./api.js";
import { changesOf, diffSummary, diffTable } from "./diff.js";
import { copyButton, h, icon } from "./dom.js";
import {
  actorBadge,
  actorOf,
  aggregateOf,
  countryName,
  jsonValue,
  passkeyMark,
} from "./format.js";
import { isoInZone, longTime, relativeTime } from "./time.js";

let sectionCount = 0;

function section(title, ...content) {
  const id = `drawer-section-${++sectionCount}`;
  return h(
    "section",
    { class: "drawer-section", "aria-labelledby": id },
    h("h3", { id }, title),
    ...content,
  );
}

/** A <dl> of [term, value] pairs; pairs with no value are left out. */
function facts(pairs) {
  const items = pairs
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([term, value]) => h("div", { class: "fact" }, h("dt", {}, term), h("dd", {}, value)));
  return h("dl", { class: "facts" }, items);
}

const mono = (text) => h("code", { class: "mono" }, text);
const muted = (text) => h("span", { class: "muted" }, text);

export class Drawer {
  /**
   * onFilter(partialState): the reader asked to see entries like this one.
   * onShow(id) / onHide(): the drawer opened an entry / closed.
   */
  constructor(dialog, { zone, onFilter, onShow, onHide }) {
    this.dialog = dialog;
    this.zone = zone;
    this.onFilter = onFilter;
    this.onShow = onShow;
    this.onHide = onHide;
    this.title = dialog.querySelector("#drawer-title");
    this.subtitle = dialog.querySelector("#drawer-subtitle");
    this.body = dialog.querySelector("#drawer-body");
    this.returnFocus = null;
    this.loading = null;
    dialog.querySelector("#drawer-close").addEventListener("click", () => this.close());
    dialog.addEventListener("close", () => this.closed());
    // A click on the backdrop (the dialog box itself, outside its content) closes.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) this.close();
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  async open(id, { returnFocus } = {}) {
    if (!this.dialog.open) {
      this.returnFocus = returnFocus || document.activeElement;
      this.dialog.showModal();
    }
    this.onShow(id);
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    this.title.textContent = "Loading…";
    this.subtitle.textContent = "";
    this.body.replaceChildren(h("p", { class: "muted" }, "Loading the entry…"));
    this.body.setAttribute("aria-busy", "true");
    try {
      const entry = await getJson(urls.entry(id), { signal: controller.signal });
      this.render(entry);
    } catch (error) {
      if (error.name === "AbortError") return;
      this.title.textContent = "Entry not available";
      const message =
        error instanceof ApiError && error.status === 404
          ? "This entry does not exist in your workspace's log."
          : error.message;
      this.body.replaceChildren(h("p", { class: "form-error", role: "alert" }, message));
    } finally {
      if (this.loading === controller) this.body.removeAttribute("aria-busy");
    }
    this.title.focus();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  closed() {
    this.loading?.abort();
    this.onHide();
    const target = this.returnFocus;
    this.returnFocus = null;
    if (target && target.isConnected) target.focus();
  }

  /** Close, then show the entries matching `partial` in the list. */
  filter(partial) {
    this.returnFocus = null; // the list is about to change; focus goes to it instead
    this.close();
    this.onFilter(partial);
  }

  render(entry) {
    const zone = this.zone();
    const when = new Date(entry.occurred_at);
    this.title.replaceChildren(mono(entry.action));
    this.subtitle.replaceChildren(
      h("time", { datetime: entry.occurred_at, title: isoInZone(when, zone) }, longTime(when, zone)),
      ` · ${relativeTime(when)}`,
    );
    this.body.replaceChildren(
      this.summary(entry, zone),
      this.actor(entry),
      this.request(entry),
      this.changes(entry),
      this.metadata(entry),
      this.related(entry),
      this.integrity(entry),
    );
  }

  summary(entry, zone) {
    const aggregate = aggregateOf(entry);
    return section(
      "Summary",
      facts([
        ["Event", h("span", { class: "with-copy" }, mono(entry.action), copyButton(entry.action, "event name"))],
        [
          "Resource",
          aggregate &&
            h(
              "span",
              { class: "with-copy" },
              mono(aggregate),
              entry.entity_id &&
                h(
                  "button",
                  {
                    type: "button",
                    class: "link-button",
                    onclick: () => this.filter({ entity_id: entry.entity_id }),
                  },
                  icon("filter", 12),
                  "Entries for this resource",
                ),
            ),
        ],
        ["When (ISO)", mono(isoInZone(new Date(entry.occurred_at), zone))],
        ["Feature", `${entry.feature} · ${entry.operation}`],
        ["Entry ID", h("span", { class: "with-copy" }, mono(entry.id), copyButton(entry.id, "entry ID"))],
      ]),
    );
  }

  actor(entry) {
    const actor = actorOf(entry);
    return section(
      "Actor",
      facts([
        [
          "Who",
          h(
            "span",
            { class: "actor" },
            actorBadge(actor.type, actor.typeLabel),
            h("span", { class: "actor-name" }, actor.name),
            entry.passkey ? passkeyMark() : null,
          ),
        ],
        [actor.type === "system" ? "Job" : "ID", entry.actor_id ? mono(entry.actor_id) : null],
        ["Passkey", entry.passkey ? "Verified with a passkey" : "Not verified with a passkey"],
      ]),
    );
  }

  request(entry) {
    const client = entry.client || {};
    const known = (value) => value && value !== "Other"; // the parser's "don't know"
    const clientText = [
      known(client.browser) && client.browser,
      known(client.os) && `on ${client.os}`,
      known(client.device) && `· ${client.device}`,
      client.is_bot && "· bot",
    ]
      .filter(Boolean)
      .join(" ");
    const country = entry.country
      ? `${countryName(entry.country)} (${entry.country})`
      : "country unknown";
    return section(
      "Request",
      facts([
        ["IP address", entry.ip ? h("span", {}, mono(entry.ip), muted(` · ${country}`)) : muted("not recorded")],
        ["Client", clientText || null],
        ["User agent", entry.user_agent ? h("code", { class: "mono wrap" }, entry.user_agent) : null],
        [
          "Request ID",
          entry.request_id
            ? h(
                "span",
                { class: "with-copy" },
                mono(entry.request_id),
                copyButton(entry.request_id, "request ID"),
                h(
                  "button",
                  {
                    type: "button",
                    class: "link-button",
                    onclick: () => this.filter({ request_id: entry.request_id }),
                  },
                  icon("filter", 12),
                  "Every entry of this request",
                ),
              )
            : muted("none (not made by a request)"),
        ],
      ]),
    );
  }

  changes(entry) {
    if (entry.before == null && entry.after == null) {
      return section("Changes", h("p", { class: "muted" }, "No record state: this event changed no stored fields."));
    }
    const changes = changesOf(entry.before, entry.after);
    return section(
      "Changes",
      h("p", { class: "section-note" }, diffSummary(entry, changes)),
      changes.length ? diffTable(entry, changes) : null,
    );
  }

  metadata(entry) {
    const pairs = Object.entries(entry.metadata || {});
    if (!pairs.length) return section("Metadata", h("p", { class: "muted" }, "None."));
    return section("Metadata", facts(pairs.map(([key, value]) => [key, jsonValue(value)])));
  }

  related(entry) {
    const related = entry.related || [];
    if (!related.length) {
      return section("Related entries", h("p", { class: "muted" }, "None: no other entry shares this request or chain."));
    }
    const zone = this.zone();
    return section(
      `Related entries (${related.length})`,
      h(
        "ul",
        { class: "related" },
        related.map((other) =>
          h(
            "li",
            {},
            h(
              "button",
              { type: "button", class: "related-item", onclick: () => this.open(other.id) },
              mono(other.action),
              h("span", { class: "related-aggregate" }, aggregateOf(other)),
              h(
                "time",
                { datetime: other.occurred_at, title: isoInZone(new Date(other.occurred_at), zone) },
                relativeTime(new Date(other.occurred_at)),
              ),
            ),
          ),
        ),
      ),
    );
  }

  integrity(entry) {
    return section(
      "Integrity",
      facts([
        ["Sequence", String(entry.seq)],
        ["Digest (SHA-256)", h("code", { class: "mono wrap" }, entry.digest)],
      ]),
    );
  }
}
