// The view's state lives in the query string: a filtered view is a link one
// can share, and the back button walks through earlier filters. The page's
// parameters are the API's filter names, except the date range, kept as
// calendar days (`from`, `to`) in the chosen time zone the way people pick it.

import { addDays, daysBetween, isDate, todayIn, zonedDayBoundary } from "./time.js";

/** Text filters passed to the API as they are. */
export const TEXT_FILTERS = ["q", "actor_id", "actor_type", "entity_id", "request_id"];
export const DEFAULT_DAYS = 7;
export const MAX_SPAN_DAYS = 366; // the API's limit for one list query

export function emptyState() {
  return {
    q: "",
    actor_id: "",
    actor_type: "",
    entity_id: "",
    request_id: "",
    action: [],
    from: "",
    to: "",
    tz: "",
    entry: "",
  };
}

export function readState(search = window.location.search) {
  const params = new URLSearchParams(search);
  const state = emptyState();
  for (const key of [...TEXT_FILTERS, "from", "to", "tz", "entry"]) {
    state[key] = (params.get(key) || "").trim();
  }
  const actions = params.getAll("action").flatMap((v) => v.split(","));
  state.action = [...new Set(actions.map((a) => a.trim()).filter(Boolean))].sort();
  return state;
}

/** The query string of `state` (with a leading "?", or "" when empty). */
export function toSearch(state) {
  const params = new URLSearchParams();
  for (const key of TEXT_FILTERS) if (state[key]) params.set(key, state[key]);
  if (state.action.length) params.set("action", state.action.join(","));
  for (const key of ["from", "to", "tz", "entry"]) if (state[key]) params.set(key, state[key]);
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** Whether any filter narrows the log (the date range excepted). */
export function hasFilters(state) {
  return TEXT_FILTERS.some((key) => state[key]) || state.action.length > 0;
}

/**
 * The calendar days the view covers, defaults applied: the last 7 days
 * (today included) unless chosen. Returns {from, to, error}.
 */
export function dateRange(state, zone, now = new Date()) {
  const bad = [state.from, state.to].find((d) => d && !isDate(d));
  if (bad) return { from: "", to: "", error: `"${bad}" is not a date; use YYYY-MM-DD.` };
  const to = state.to || todayIn(zone, now);
  const from = state.from || addDays(to, -(DEFAULT_DAYS - 1));
  if (daysBetween(from, to) < 0) {
    return { from, to, error: "The date range ends before it starts." };
  }
  if (daysBetween(from, to) + 1 > MAX_SPAN_DAYS) {
    return {
      from,
      to,
      error:
        "One view spans at most 1 year. Narrow the dates, or export: exports have no limit.",
    };
  }
  return { from, to, error: "" };
}

/**
 * The API's filters for `state` over `range` (from dateRange): the calendar
 * days become UTC instants, since the API only speaks UTC.
 */
export function apiParams(state, zone, range) {
  const params = new URLSearchParams();
  for (const key of TEXT_FILTERS) if (state[key]) params.set(key, state[key]);
  if (state.action.length) params.set("action", state.action.join(","));
  if (range.from && isDate(range.from)) {
    params.set("start_date", zonedDayBoundary(range.from, zone).toISOString());
  }
  if (range.to && isDate(range.to)) {
    params.set("end_date", zonedDayBoundary(range.to, zone, true).toISOString());
  }
  return params;
}
