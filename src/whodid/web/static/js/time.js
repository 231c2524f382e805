// Time zones without a library: Intl knows every IANA zone's offset at any
// instant, which is all we need to show times and to turn the date filter's
// calendar days (in the chosen zone) into UTC instants for the API.

const DAY_MS = 86_400_000;
const partsCache = new Map();

function formatter(zone) {
  if (!partsCache.has(zone)) {
    partsCache.set(
      zone,
      new Intl.DateTimeFormat("en-US", {
        timeZone: zone,
        hourCycle: "h23",
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
      }),
    );
  }
  return partsCache.get(zone);
}

/** Wall-clock fields of `date` in `zone`. */
function wallClock(date, zone) {
  const out = {};
  for (const part of formatter(zone).formatToParts(date)) out[part.type] = part.value;
  return {
    year: Number(out.year),
    month: Number(out.month),
    day: Number(out.day),
    hour: Number(out.hour),
    minute: Number(out.minute),
    second: Number(out.second),
  };
}

/** Minutes `zone` is ahead of UTC at the instant `date`. */
export function offsetMinutes(date, zone) {
  const w = wallClock(date, zone);
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
  return Math.round((asUtc - Math.floor(date.getTime() / 1000) * 1000) / 60_000);
}

export function isValidZone(zone) {
  if (typeof zone !== "string" || !zone) return false;
  try {
    formatter(zone);
    return true;
  } catch {
    return false;
  }
}

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function allZones() {
  return typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

function formatOffset(minutes) {
  if (minutes === 0) return "Z";
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** ISO 8601 in `zone` with its offset, e.g. 2026-03-01T15:32:00.123+01:00. */
export function isoInZone(date, zone) {
  const w = wallClock(date, zone);
  const ms = pad(date.getUTCMilliseconds(), 3);
  return (
    `${w.year}-${pad(w.month)}-${pad(w.day)}T${pad(w.hour)}:${pad(w.minute)}:${pad(w.second)}` +
    `.${ms}${formatOffset(offsetMinutes(date, zone))}`
  );
}

/** A readable full time, e.g. "1 Mar 2026, 15:32:00 (Europe/Berlin)". */
export function longTime(date, zone) {
  const text = new Intl.DateTimeFormat("en-GB", {
    timeZone: zone,
    dateStyle: "medium",
    timeStyle: "medium",
  }).format(date);
  return `${text} (${zone})`;
}

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS = [
  ["year", 365 * DAY_MS],
  ["month", 30 * DAY_MS],
  ["week", 7 * DAY_MS],
  ["day", DAY_MS],
  ["hour", 3_600_000],
  ["minute", 60_000],
];

/** "3 minutes ago", "yesterday", "just now". */
export function relativeTime(date, now = new Date()) {
  const diff = date.getTime() - now.getTime();
  if (Math.abs(diff) < 45_000) return "just now";
  for (const [unit, ms] of UNITS) {
    if (Math.abs(diff) >= ms || unit === "minute") {
      return relative.format(Math.round(diff / ms), unit);
    }
  }
  return "just now";
}

/** Today's calendar date in `zone`, as YYYY-MM-DD. */
export function todayIn(zone, now = new Date()) {
  const w = wallClock(now, zone);
  return `${w.year}-${pad(w.month)}-${pad(w.day)}`;
}

const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;

export function isDate(text) {
  const m = DATE_RE.exec(text || "");
  if (!m) return false;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return d.getUTCDate() === +m[3] && d.getUTCMonth() === +m[2] - 1;
}

/** `date` (YYYY-MM-DD) moved by `days` calendar days. */
export function addDays(date, days) {
  const [y, m, d] = date.split("-").map(Number);
  const t = new Date(Date.UTC(y, m - 1, d) + days * DAY_MS);
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}`;
}

/** Whole days from `a` to `b` (both YYYY-MM-DD). */
export function daysBetween(a, b) {
  const toUtc = (s) => {
    const [y, m, d] = s.split("-").map(Number);
    return Date.UTC(y, m - 1, d);
  };
  return Math.round((toUtc(b) - toUtc(a)) / DAY_MS);
}

/**
 * The UTC instant at which calendar day `date` starts in `zone` (or, with
 * `endOfDay`, its last millisecond). Two passes settle days where the offset
 * changes (daylight saving).
 */
export function zonedDayBoundary(date, zone, endOfDay = false) {
  const [y, m, d] = date.split("-").map(Number);
  const wall = endOfDay ? Date.UTC(y, m - 1, d, 23, 59, 59, 999) : Date.UTC(y, m - 1, d);
  let instant = wall - offsetMinutes(new Date(wall), zone) * 60_000;
  instant = wall - offsetMinutes(new Date(instant), zone) * 60_000;
  return new Date(instant);
}
