// The filter form: shows a state, and turns what the reader changes into a
// new state. Text fields apply on submit (Enter or "Apply filters"); choices
// (selects, dates, action checkboxes) apply as soon as they change.

import { h, icon } from "./dom.js";
import { domainOf, humanize } from "./format.js";
import { emptyState } from "./state.js";

const CHIP_FILTERS = { request_id: "Request" };

export class FilterForm {
  /** onChange(partialState, {replace}) is called with what the reader changed. */
  constructor(root, { onChange }) {
    this.form = root.querySelector("#filters");
    this.onChange = onChange;
    this.fields = {
      q: this.form.querySelector("#f-q"),
      actor_id: this.form.querySelector("#f-actor"),
      actor_type: this.form.querySelector("#f-actor-type"),
      entity_id: this.form.querySelector("#f-entity"),
      from: this.form.querySelector("#f-from"),
      to: this.form.querySelector("#f-to"),
    };
    this.actionMenu = root.querySelector("#action-menu");
    this.actionGroups = root.querySelector("#action-groups");
    this.actionSummary = root.querySelector("#action-summary");
    this.chips = root.querySelector("#chips");
    this.suggestions = root.querySelector("#actor-suggestions");
    this.error = root.querySelector("#form-error");
    this.knownActions = [];
    this.actionsLoaded = false;
    this.selected = [];
    this.actors = new Map();
    this.implied = { from: null, to: null };

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.onChange(this.read());
    });
    for (const name of ["actor_type", "from", "to"]) {
      this.fields[name].addEventListener("change", () => this.onChange(this.read()));
    }
    root.querySelector("#reset").addEventListener("click", () => this.onChange(emptyState(), { reset: true }));
    root.querySelector("#action-clear").addEventListener("click", () => {
      this.selected = [];
      this.onChange({ action: [] });
    });
    this.actionGroups.addEventListener("change", (event) => {
      if (event.target.type !== "checkbox") return;
      this.selected = [...this.actionGroups.querySelectorAll("input:checked")].map((i) => i.value);
      this.onChange({ action: this.selected });
    });
    closeOnEscape(this.actionMenu);
    this.toggle = root.querySelector("#filters-toggle");
    this.toggle.addEventListener("click", () => {
      const open = this.toggle.getAttribute("aria-expanded") !== "true";
      this.toggle.setAttribute("aria-expanded", String(open));
    });
  }

  /** What the form says now (text fields included, submitted or not). */
  read() {
    const state = {};
    for (const [name, field] of Object.entries(this.fields)) state[name] = field.value.trim();
    // A date still showing its default stays out of the URL, so the default
    // range keeps rolling forward ("the last 7 days", not a fixed week).
    for (const name of ["from", "to"]) if (state[name] === this.implied[name]) state[name] = "";
    state.action = [...this.selected];
    return state;
  }

  show(state, range) {
    for (const name of ["q", "actor_id", "actor_type", "entity_id"]) {
      this.fields[name].value = state[name];
    }
    // The inputs show the range in effect, defaults included.
    this.fields.from.value = range.from;
    this.fields.to.value = range.to;
    this.implied = { from: state.from ? null : range.from, to: state.to ? null : range.to };
    this.selected = [...state.action];
    this.renderActions();
    this.renderChips(state);
    const active = ["actor_id", "actor_type", "entity_id", "from", "to"].filter((k) => state[k]);
    const count = active.length + (state.action.length ? 1 : 0);
    this.toggle.querySelector("#filters-count").textContent = count ? ` · ${count} active` : "";
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  setActions(actions) {
    this.knownActions = actions;
    this.actionsLoaded = true;
    this.renderActions();
  }

  /** Offer the actors seen so far as suggestions for the actor field. */
  rememberActors(entries) {
    for (const entry of entries) {
      if (entry.actor_id && !this.actors.has(entry.actor_id)) {
        this.actors.set(entry.actor_id, entry.actor_label || entry.actor_type);
        this.suggestions.append(h("option", { value: entry.actor_id }, this.actors.get(entry.actor_id)));
      }
    }
  }

  renderActions() {
    const names = [...new Set([...this.knownActions, ...this.selected])].sort();
    this.renderSummary();
    if (!this.actionsLoaded && !names.length) return; // "Loading actions…" stays
    // Same choices as shown: only tick boxes, so the focused checkbox stays put.
    if (this.actionGroups.dataset.names === names.join(",") && names.length) {
      for (const box of this.actionGroups.querySelectorAll("input")) {
        box.checked = this.selected.includes(box.value);
      }
      return;
    }
    this.actionGroups.dataset.names = names.join(",");
    const groups = new Map();
    for (const name of names) {
      const domain = domainOf(name);
      if (!groups.has(domain)) groups.set(domain, []);
      groups.get(domain).push(name);
    }
    this.actionGroups.replaceChildren(
      ...(names.length
        ? [...groups].map(([domain, actions]) =>
            h(
              "fieldset",
              { class: "action-group" },
              h("legend", {}, humanize(domain)),
              actions.map((name) =>
                h(
                  "label",
                  { class: "check" },
                  h("input", {
                    type: "checkbox",
                    name: "action",
                    value: name,
                    checked: this.selected.includes(name),
                  }),
                  h("code", {}, name),
                ),
              ),
            ),
          )
        : [h("p", { class: "muted" }, "No actions recorded yet.")]),
    );
  }

  renderSummary() {
    const count = this.selected.length;
    this.actionSummary.textContent =
      count === 0 ? "All actions" : count === 1 ? this.selected[0] : `${count} actions`;
    this.actionSummary.parentElement.classList.toggle("is-set", count > 0);
  }

  renderChips(state) {
    const active = Object.entries(CHIP_FILTERS).filter(([key]) => state[key]);
    this.chips.hidden = active.length === 0;
    this.chips.replaceChildren(
      ...active.map(([key, label]) =>
        h(
          "li",
          { class: "chip" },
          h("span", {}, `${label}: `, h("code", {}, state[key])),
          h(
            "button",
            {
              type: "button",
              class: "icon-button",
              "aria-label": `Remove the ${label.toLowerCase()} filter ${state[key]}`,
              onclick: () => this.onChange({ [key]: "" }),
            },
            icon("close", 12),
          ),
        ),
      ),
    );
  }
}

/** Escape closes a <details> menu and puts focus back on its summary. */
export function closeOnEscape(details) {
  details.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && details.open) {
      event.preventDefault();
      event.stopPropagation();
      details.open = false;
      details.querySelector("summary").focus();
    }
  });
  // A click elsewhere closes it too, as menus do.
  document.addEventListener("click", (event) => {
    if (details.open && !details.contains(event.target)) details.open = false;
  });
}
