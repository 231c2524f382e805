// The JSON API, by relative URLs: wherever audit_app is mounted, the page and
// the API share a prefix, and the browser's session cookie authenticates both.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  get denied() {
    return this.status === 401 || this.status === 403;
  }
}

export async function getJson(url, { signal } = {}) {
  let response;
  try {
    response = await fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "The audit log could not be reached. Check your connection and try again.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy's HTML error page, say: the status alone must do.
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : {};
    throw new ApiError(
      response.status,
      error.code || "http_error",
      error.message || `The audit log answered with HTTP ${response.status}.`,
    );
  }
  return body;
}

export const urls = {
  list: (params) => `audit-logs?${params}`,
  entry: (id) => `audit-logs/${encodeURIComponent(id)}`,
  actions: () => "audit-logs/actions",
  export: (format, params) => `audit-logs/export.${format}${params.size ? `?${params}` : ""}`,
};
