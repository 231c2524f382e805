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

/** A table of changes: field, kind, before, after. */
export function diffTable(changes) {
  const rows = changes.map((change) =>
    h(
      "tr",
      { class: `diff-${change.kind}` },
      h(
        "th",
        { scope: "row", class: "diff-field" },
        h("code", {}, change.path),
        h("span", { class: `kind kind-${change.kind}` }, KIND_LABEL[change.kind]),
      ),
      h(
        "td",
        { class: "diff-before" },
        h("span", { class: "cell-label" }, "Before"),
        change.kind === "added" ? h("span", { class: "json-none" }, "—") : jsonValue(change.before),
      ),
      h(
        "td",
        { class: "diff-arrow", "aria-hidden": "true" },
        icon("arrow", 12),
      ),
      h(
        "td",
        { class: "diff-after" },
        h("span", { class: "cell-label" }, "After"),
        change.kind === "removed" ? h("span", { class: "json-none" }, "—") : jsonValue(change.after),
      ),
    ),
  );
  return h(
    "table",
    { class: "diff" },
    h("caption", { class: "visually-hidden" }, "Changed fields, with values before and after"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Field"),
        h("th", { scope: "col" }, "Before"),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "to")),
        h("th", { scope: "col" }, "After"),
      ),
    ),
    h("tbody", {}, rows),
  );
}
