// Small DOM helpers. Every value from the log goes in as text, never as HTML:
// user agents, metadata and labels are chosen by whoever made the request.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("span", {class: "x"}, "text", child) -> element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

const PATHS = {
  copy: "M0 6.75C0 5.78.78 5 1.75 5h1.5a.75.75 0 0 1 0 1.5h-1.5a.25.25 0 0 0-.25.25v7.5c0 .14.11.25.25.25h7.5a.25.25 0 0 0 .25-.25v-1.5a.75.75 0 0 1 1.5 0v1.5A1.75 1.75 0 0 1 9.25 16h-7.5A1.75 1.75 0 0 1 0 14.25ZM5 1.75C5 .78 5.78 0 6.75 0h7.5C15.22 0 16 .78 16 1.75v7.5A1.75 1.75 0 0 1 14.25 11h-7.5A1.75 1.75 0 0 1 5 9.25Zm1.75-.25a.25.25 0 0 0-.25.25v7.5c0 .14.11.25.25.25h7.5a.25.25 0 0 0 .25-.25v-7.5a.25.25 0 0 0-.25-.25Z",
  key: "M10.5 0a5.5 5.5 0 1 1-1.72 10.73l-.55.55a.75.75 0 0 1-.53.22H6.5v1a.75.75 0 0 1-.75.75h-1v1a.75.75 0 0 1-.75.75H1.75A1.75 1.75 0 0 1 0 14.25v-2.19c0-.46.18-.9.51-1.24l4.76-4.76A5.5 5.5 0 0 1 10.5 0Zm0 1.5a4 4 0 0 0-3.86 5.05.75.75 0 0 1-.19.73L1.56 12.17a.25.25 0 0 0-.06.1v2c0 .13.11.23.25.23h1.5v-1a.75.75 0 0 1 .75-.75h1v-1a.75.75 0 0 1 .75-.75h1.38l.72-.72a.75.75 0 0 1 .84-.15A4 4 0 1 0 10.5 1.5ZM11 4a1 1 0 1 1 0 2 1 1 0 0 1 0-2Z",
  filter: "M.75 3h14.5a.75.75 0 0 1 0 1.5H.75a.75.75 0 0 1 0-1.5ZM3 7.75A.75.75 0 0 1 3.75 7h8.5a.75.75 0 0 1 0 1.5h-8.5A.75.75 0 0 1 3 7.75Zm3 4a.75.75 0 0 1 .75-.75h2.5a.75.75 0 0 1 0 1.5h-2.5a.75.75 0 0 1-.75-.75Z",
  close: "M3.72 3.72a.75.75 0 0 1 1.06 0L8 6.94l3.22-3.22a.75.75 0 1 1 1.06 1.06L9.06 8l3.22 3.22a.75.75 0 1 1-1.06 1.06L8 9.06l-3.22 3.22a.75.75 0 0 1-1.06-1.06L6.94 8 3.72 4.78a.75.75 0 0 1 0-1.06Z",
  arrow: "M8.22 2.97a.75.75 0 0 1 1.06 0l4.25 4.25a.75.75 0 0 1 0 1.06l-4.25 4.25a.75.75 0 0 1-1.06-1.06l2.97-2.97H3.75a.75.75 0 0 1 0-1.5h7.44L8.22 4.03a.75.75 0 0 1 0-1.06Z",
};

/** A decorative 16px icon (hidden from assistive technology). */
export function icon(name, size = 14) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", PATHS[name]);
  svg.append(path);
  return svg;
}

let announcer = null;

/** Tell screen reader users (politely) about something that happened. */
export function announce(text) {
  if (!announcer) {
    announcer = h("div", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    document.body.append(announcer);
  }
  announcer.textContent = "";
  // A fresh text node after a tick, so repeating a message is announced again.
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API needs a secure context; fall back to a selection copy.
    const area = h("textarea", { class: "visually-hidden", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  announce(`Copied ${text}`);
}

/** A small copy button for `text`; `label` names what is copied. */
export function copyButton(text, label) {
  const button = h(
    "button",
    {
      type: "button",
      class: "icon-button copy",
      "aria-label": `Copy ${label}`,
      title: `Copy ${label}`,
      onclick: async (event) => {
        event.stopPropagation();
        await copyText(text);
        button.classList.add("copied");
        button.title = "Copied";
        setTimeout(() => {
          button.classList.remove("copied");
          button.title = `Copy ${label}`;
        }, 1200);
      },
    },
    icon("copy"),
  );
  return button;
}
