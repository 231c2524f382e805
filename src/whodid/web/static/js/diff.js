// Before/after of an entry as a list of field changes. Nested objects are
// walked to their leaves ("profile.address.city"), so a change deep in a JSON
// column shows as the one value that moved, not as two large blobs.

import { h, icon } from "./dom.js";
import { jsonValue } from "./format.js";

const MISSING = Symbol("missing");

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function flatten(value, prefix, out) {
  if (isPlainObject(value) && Object.keys(value).length > 0) {
    for (const [key, inner] of Object.entries(value)) {
      flatten(inner, prefix ? `${prefix}.${key}` : key, out);
    }
  } else {
    out.set(prefix, value); // arrays and scalars are compared whole
  }
  return out;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** [{path, kind: "added" | "removed" | "changed", before, after}], in field order. */
export function changesOf(before, after) {
  const old = flatten(before || {}, "", new Map());
  const now = flatten(after || {}, "", new Map());
  const paths = [...new Set([...old.keys(), ...now.keys()])].filter(Boolean);
  const changes = [];
  for (const path of paths) {
    const a = old.has(path) ? old.get(path) : MISSING;
    const b = now.has(path) ? now.get(path) : MISSING;
    if (a === MISSING) changes.push({ path, kind: "added", before: null, after: b });
    else if (b === MISSING) changes.push({ path, kind: "removed", before: a, after: null });
    else if (!same(a, b)) changes.push({ path, kind: "changed", before: a, after: b });
  }
  return changes;
}

/** One sentence on what the diff shows, by kind of operation. */
export function diffSummary(entry, changes) {
  const count = (kind) => changes.filter((c) => c.kind === kind).length;
  if (entry.before == null && entry.after != null) {
    return `Created: the full record after the change (${plural(changes.length, "field")}).`;
  }
  if (entry.after == null && entry.before != null) {
    return `Deleted: the full record before the change (${plural(changes.length, "field")}).`;
  }
  const parts = [];
  if (count("changed")) parts.push(`${count("changed")} changed`);
  if (count("added")) parts.push(`${count("added")} added`);
  if (count("removed")) parts.push(`${count("removed")} removed`);
  return `Updated: ${parts.join(", ") || "no field"}.`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

const KIND_LABEL = { added: "Added", removed: "Removed", changed: "Changed" };

function valueCell(side, change) {
  const absent = (side === "before" && change.kind === "added") ||
    (side === "after" && change.kind === "removed");
  return h(
    "td",
    { class: `diff-${side}` },
    h("span", { class: "cell-label", "aria-hidden": "true" }, side === "before" ? "Before" : "After"),
    absent ? h("span", { class: "json-none" }, "—") : jsonValue(change[side]),
  );
}

/**
 * A table of changes. A creation or deletion has one side only, so it shows
 * one value column; an update shows before, an arrow and after.
 */
export function diffTable(entry, changes) {
  const oneSide = entry.before == null ? "after" : entry.after == null ? "before" : null;
  const head = oneSide
    ? [h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value")]
    : [
        h("th", { scope: "col" }, "Field"),
        h("th", { scope: "col" }, "Before"),
        h("th", { scope: "col", class: "diff-arrow" }, h("span", { class: "visually-hidden" }, "to")),
        h("th", { scope: "col" }, "After"),
      ];
  const rows = changes.map((change) => {
    const field = h(
      "th",
      { scope: "row", class: "diff-field" },
      h("code", {}, change.path),
      oneSide ? null : h("span", { class: `kind kind-${change.kind}` }, KIND_LABEL[change.kind]),
    );
    if (oneSide) {
      return h("tr", { class: `diff-${change.kind}` }, field, h("td", {}, jsonValue(change[oneSide])));
    }
    return h(
      "tr",
      { class: `diff-${change.kind}` },
      field,
      valueCell("before", change),
      h("td", { class: "diff-arrow", "aria-hidden": "true" }, icon("arrow", 12)),
      valueCell("after", change),
    );
  });
  return h(
    "table",
    { class: `diff ${oneSide ? "diff-one-side" : "diff-two-sides"}` },
    h("caption", { class: "visually-hidden" }, oneSide ? "Recorded fields" : "Changed fields, before and after"),
    h("thead", {}, h("tr", {}, head)),
    h("tbody", {}, rows),
  );
}
