// The dashboard: wires the URL state, the filter form, the list and the
// drawer to the JSON API. Every change of filters is a new history entry;
// opening an entry only replaces the current one (a link to it still works).

import { ApiError, getJson, urls } from "./api.js";
import { Drawer } from "./drawer.js";
import { FilterForm, closeOnEscape } from "./filters.js";
import { EntryList } from "./list.js";
import { apiParams, dateRange, emptyState, hasFilters, readState, toSearch } from "./state.js";
import { allZones, browserZone, isValidZone } from "./time.js";

const config = JSON.parse(document.getElementById("whodid-config").textContent);
const ZONE_KEY = "whodid.timezone";
const $ = (selector) => document.querySelector(selector);

function storedZone() {
  try {
    return localStorage.getItem(ZONE_KEY) || "";
  } catch {
    return ""; // storage disabled: the URL still carries the zone
  }
}

function storeZone(zone) {
  try {
    localStorage.setItem(ZONE_KEY, zone);
  } catch {
    // as above
  }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

class Dashboard {
  constructor() {
    this.defaultZone = isValidZone(config.defaultTimezone) ? config.defaultTimezone : "UTC";
    this.state = readState();
    this.zone = this.pickZone(this.state.tz);
    this.cursor = null;
    this.loading = null;
    this.loads = 0;
    this.denied = false;
    this.actions = getJson(urls.actions()).then(
      (body) => body.data,
      () => null, // the list's own request reports errors
    );

    this.form = new FilterForm(document, { onChange: (partial, opts) => this.apply(partial, opts) });
    this.list = new EntryList($("#rows"), {
      zone: () => this.zone,
      onOpen: (id, row) => this.drawer.open(id, { returnFocus: row }),
      onFilter: (partial) => this.apply(partial),
    });
    this.drawer = new Drawer($("#drawer"), {
      zone: () => this.zone,
      onFilter: (partial) => this.apply(partial),
      onShow: (id) => this.setEntry(id),
      onHide: () => this.setEntry(""),
    });
    this.setUpZones();
    closeOnEscape($("#export-menu"));
    for (const link of document.querySelectorAll("#export-menu a")) {
      link.addEventListener("click", () => {
        $("#export-menu").open = false;
      });
    }
    $("#load-more").addEventListener("click", () => this.more());
    $("#empty-clear").addEventListener("click", () => this.apply(emptyState(), { reset: true }));
    window.addEventListener("popstate", () => this.restore());
    document.addEventListener("keydown", (event) => this.shortcut(event));
    setInterval(() => this.list.refreshTimes(), 60_000);

    this.actions.then((actions) => actions && this.form.setActions(actions));
    if (this.state.tz !== this.zone && this.zone !== this.defaultZone) {
      this.state.tz = this.zone; // a remembered zone goes into the link, so it shares
      history.replaceState(null, "", toSearch(this.state) || location.pathname);
    }
    this.load().then(() => this.openFromUrl());
  }

  /** The entry a link names (?entry=...), opened as if from its row. */
  openFromUrl() {
    if (this.denied) return;
    if (!this.state.entry) {
      this.drawer.close();
      return;
    }
    const row = this.list.rows.find((r) => r.dataset.id === this.state.entry);
    this.drawer.open(this.state.entry, { returnFocus: row || $("#log") });
  }

  // -- time zone -----------------------------------------------------------------

  pickZone(fromUrl) {
    for (const zone of [fromUrl, storedZone(), this.defaultZone]) {
      if (isValidZone(zone)) return zone;
    }
    return "UTC";
  }

  setUpZones() {
    const select = $("#tz");
    const local = browserZone();
    const option = (value, label) => new Option(label, value);
    select.append(option(this.defaultZone, `${this.defaultZone} (workspace default)`));
    if (local !== this.defaultZone) select.append(option(local, `${local} (this browser)`));
    const group = document.createElement("optgroup");
    group.label = "All time zones";
    for (const zone of allZones()) group.append(option(zone, zone));
    select.append(group);
    this.showZone();
    select.addEventListener("change", () => {
      storeZone(select.value);
      this.apply({ tz: select.value === this.defaultZone ? "" : select.value });
    });
  }

  /** Select the zone in use, adding it first if Intl lists it under another name. */
  showZone() {
    const select = $("#tz");
    if (![...select.options].some((o) => o.value === this.zone)) {
      select.insertBefore(new Option(this.zone, this.zone), select.querySelector("optgroup"));
    }
    select.value = this.zone;
  }

  // -- state ---------------------------------------------------------------------

  apply(partial, { reset = false } = {}) {
    const base = reset ? { ...emptyState(), tz: this.state.tz } : this.state;
    const next = { ...base, ...partial, entry: "" };
    const search = toSearch(next);
    if (search !== location.search) history.pushState(null, "", search || location.pathname);
    this.state = next;
    this.zone = this.pickZone(next.tz);
    // A filter applied from a row or the drawer removes what had focus.
    const lost = $("#rows").contains(document.activeElement) || this.drawer.isOpen;
    return this.load({ focusList: lost });
  }

  restore() {
    this.state = readState();
    this.zone = this.pickZone(this.state.tz);
    this.showZone();
    this.load().then(() => this.openFromUrl());
  }

  setEntry(id) {
    if (this.state.entry === id) return;
    this.state.entry = id;
    history.replaceState(null, "", toSearch(this.state) || location.pathname);
  }

  // -- loading -------------------------------------------------------------------

  async load({ focusList = false } = {}) {
    // For tests and tools: "loading" until the list shows the current state.
    const seq = ++this.loads;
    document.body.dataset.state = "loading";
    try {
      await this.loadList(focusList);
    } finally {
      if (seq === this.loads) document.body.dataset.state = "ready";
    }
  }

  async loadList(focusList) {
    const range = dateRange(this.state, this.zone);
    this.form.show(this.state, range);
    this.form.showError(range.error);
    const params = apiParams(this.state, this.zone, range);
    $("#export-csv").href = urls.export("csv", params);
    $("#export-ndjson").href = urls.export("ndjson", params);
    this.list.clear();
    this.showMore(null);
    $("#empty").hidden = true;
    if (range.error) {
      this.status("");
      return;
    }
    params.set("limit", String(config.pageSize));
    this.params = params;
    const page = await this.fetch(params);
    if (!page) return;
    this.list.append(page.data);
    this.form.rememberActors(page.data);
    this.showMore(page.next_cursor);
    this.status(page.data.length, range);
    if (!page.data.length) await this.showEmpty();
    if (focusList) {
      const first = this.list.rows[0];
      if (first) this.list.focusRow(first);
      else $("#log").focus();
    }
  }

  async more() {
    const button = $("#load-more");
    const params = new URLSearchParams(this.params);
    params.set("cursor", this.cursor);
    // Read before disabling: a disabled button loses focus.
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    button.textContent = "Loading…";
    document.body.dataset.state = "loading";
    const page = await this.fetch(params);
    document.body.dataset.state = "ready";
    button.disabled = false;
    button.textContent = "Load more";
    if (!page) return;
    const first = this.list.append(page.data);
    this.form.rememberActors(page.data);
    this.showMore(page.next_cursor);
    this.status(this.list.entries.length, dateRange(this.state, this.zone));
    // The button may be gone now; keyboard users continue at the first new row.
    if (hadFocus && first) this.list.focusRow(first);
  }

  /** One page, or null after showing why not. Only the latest request counts. */
  async fetch(params) {
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    $("#log-table").setAttribute("aria-busy", "true");
    this.status("Loading…");
    try {
      return await getJson(urls.list(params), { signal: controller.signal });
    } catch (error) {
      if (error.name !== "AbortError") this.fail(error);
      return null;
    } finally {
      if (this.loading === controller) $("#log-table").removeAttribute("aria-busy");
    }
  }

  fail(error) {
    if (error instanceof ApiError && error.denied) {
      this.deny(error);
      return;
    }
    this.status("");
    this.form.showError(error.message);
  }

  /** No data at all for this viewer: say why, and show nothing else. */
  deny(error) {
    this.denied = true;
    this.list.clear();
    for (const id of ["#filters-panel", "#log", "#toolbar"]) $(id).hidden = true;
    const forbidden = error.status === 403;
    $("#denied-title").textContent = forbidden
      ? "You need the owner or admin role"
      : "Sign in to read the audit log";
    $("#denied-text").textContent = forbidden
      ? "Only owners and admins of this workspace can read its audit log. Ask an owner to change your role."
      : "You are not signed in, or your session has ended. Sign in, then reload this page.";
    $("#denied").hidden = false;
  }

  showMore(cursor) {
    this.cursor = cursor;
    $("#load-more").hidden = !cursor;
  }

  status(countOrText, range) {
    const el = $("#status");
    if (typeof countOrText === "string") {
      el.textContent = countOrText;
      return;
    }
    const more = this.cursor ? ", more available" : "";
    el.textContent = `${plural(countOrText, "event")}${more} · ${range.from} to ${range.to} (${this.zone})`;
  }

  async showEmpty() {
    const actions = await this.actions;
    const filtered = hasFilters(this.state);
    const neverAny = !filtered && Array.isArray(actions) && actions.length === 0;
    $("#empty-title").textContent = neverAny
      ? "No events yet"
      : filtered
        ? "No events match these filters"
        : "No events in this date range";
    $("#empty-text").textContent = neverAny
      ? "Changes in this workspace appear here within seconds."
      : filtered
        ? "Remove a filter or widen the date range."
        : "Pick earlier dates to see older events.";
    $("#empty-clear").hidden = !filtered;
    $("#empty").hidden = false;
  }

  shortcut(event) {
    const typing = event.target.closest("input, select, textarea, [contenteditable]");
    if (event.key === "/" && !typing && !this.drawer.isOpen) {
      event.preventDefault();
      $("#f-q").focus();
    }
  }
}

new Dashboard();
