// How entries read: actors, resources, domains, countries and JSON values.

import { h, icon } from "./dom.js";

const ACTOR_TYPES = {
  user: "User",
  api_key: "API key",
  system: "System",
  anonymous: "Anonymous",
};

/** {type, typeLabel, name, detail} of an entry's actor, for people. */
export function actorOf(entry) {
  const type = entry.actor_type in ACTOR_TYPES ? entry.actor_type : "anonymous";
  const typeLabel = ACTOR_TYPES[type];
  if (type === "system") {
    // The job is the useful part; "system" says it was not a person or a key.
    return { type, typeLabel, name: "system", detail: entry.actor_label || entry.actor_id || "" };
  }
  if (type === "anonymous") return { type, typeLabel, name: "anonymous", detail: "" };
  return {
    type,
    typeLabel,
    name: entry.actor_label || entry.actor_id || "unknown",
    detail: entry.actor_label && entry.actor_id ? entry.actor_id : "",
  };
}

export function actorBadge(type, typeLabel) {
  return h("span", { class: `badge badge-${type}` }, typeLabel);
}

export function passkeyMark() {
  return h(
    "span",
    { class: "passkey", title: "Verified with a passkey" },
    icon("key", 12),
    h("span", { class: "visually-hidden" }, "verified with a passkey"),
  );
}

/** "type/id" of the resource an entry acted on, or "" when none. */
export function aggregateOf(entry) {
  if (!entry.entity_type && !entry.entity_id) return "";
  return `${entry.entity_type || "?"}/${entry.entity_id || "?"}`;
}

/** The domain of a dotted action: the part before the first dot. */
export function domainOf(action) {
  return action.split(".", 1)[0];
}

const ACRONYMS = new Set(["api", "ip", "sso", "mfa", "2fa", "url", "id", "ui"]);

/** "api_key" -> "API key", "auth" -> "Auth". */
export function humanize(word) {
  const parts = word.split(/[_\-\s]+/).filter(Boolean);
  return parts
    .map((part, i) => {
      if (ACRONYMS.has(part.toLowerCase())) return part.toUpperCase();
      return i === 0 ? part.charAt(0).toUpperCase() + part.slice(1) : part;
    })
    .join(" ");
}

let regionNames = null;

/** "GB" -> "United Kingdom" (the code itself if the browser cannot name it). */
export function countryName(code) {
  try {
    regionNames = regionNames || new Intl.DisplayNames(["en"], { type: "region" });
    return regionNames.of(code) || code;
  } catch {
    return code;
  }
}

export const REDACTED = "[REDACTED]";

/** A JSON value as an element: scalars inline, objects and arrays indented. */
export function jsonValue(value) {
  if (value === null || value === undefined) return h("span", { class: "json-null" }, "null");
  if (value === REDACTED) return h("span", { class: "redacted" }, "redacted");
  if (typeof value === "object") {
    return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
  }
  if (typeof value === "string") return h("span", { class: "json-string" }, value);
  return h("span", { class: `json-${typeof value}` }, String(value));
}
