// Typed client of the0's REST API. The types (src/schema.d.ts) are generated from
// gen/openapi/the0.openapi.json by openapi-typescript (`npm run build`); calls go through
// openapi-fetch. This file adds what codegen does not cover: token refresh on 401
// TOKEN_EXPIRED, NDJSON streams as async iterators, and the raw-zip upload with progress.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, paths };
export type Schemas = components["schemas"];
export type Status = Schemas["Status"];

const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";

/**
 * The ErrorInfo reason and request id of an error body (google.rpc.Status). Envoy's own errors
 * carry the request id in `metadata.requestId`; every response carries it as the `x-request-id`
 * header (exposed by CORS), which is read when the body has none.
 */
export function errorReason(body: unknown, headers?: Headers): { reason: string; requestId: string } {
  const fromHeader = headers?.get("x-request-id") ?? "";
  const details = (body as Status | undefined)?.details ?? [];
  for (const detail of details as Array<Record<string, unknown>>) {
    if (detail["@type"] === ERROR_INFO) {
      const metadata = (detail["metadata"] ?? {}) as Record<string, string>;
      return { reason: String(detail["reason"] ?? ""), requestId: metadata["requestId"] || fromHeader };
    }
  }
  return { reason: "", requestId: fromHeader };
}

/** Where the client keeps its tokens (memory by default; a dashboard may persist them). */
export interface TokenStore {
  accessToken?: string;
  refreshToken?: string;
}

export interface The0ClientOptions {
  baseUrl: string;
  tokens?: TokenStore;
  apiKey?: string;
  fetch?: typeof fetch;
}

export function createThe0Client(options: The0ClientOptions) {
  const tokens: TokenStore = options.tokens ?? {};
  const baseFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  let refreshing: Promise<boolean> | undefined;

  async function refresh(): Promise<boolean> {
    if (!tokens.refreshToken) return false;
    const response = await baseFetch(`${options.baseUrl}/api/auth/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: tokens.refreshToken }),
    });
    if (!response.ok) return false;
    const body = (await response.json()) as Schemas["AuthTokens"];
    tokens.accessToken = body.accessToken ?? undefined;
    tokens.refreshToken = body.refreshToken ?? undefined;
    return true;
  }

  /** fetch with credentials; on 401 TOKEN_EXPIRED refreshes once (shared by concurrent calls) and retries. */
  async function authorizedFetch(input: Request): Promise<Response> {
    const retry = input.clone();
    const response = await baseFetch(withCredentials(input));
    if (response.status !== 401 || !tokens.refreshToken) return response;
    const { reason } = errorReason(await response.clone().json().catch(() => undefined));
    if (reason !== "TOKEN_EXPIRED") return response;
    refreshing ??= refresh().finally(() => (refreshing = undefined));
    if (!(await refreshing)) return response;
    return baseFetch(withCredentials(retry));
  }

  function withCredentials(request: Request): Request {
    const headers = new Headers(request.headers);
    if (tokens.accessToken) headers.set("authorization", `Bearer ${tokens.accessToken}`);
    else if (options.apiKey) headers.set("x-api-key", options.apiKey);
    return new Request(request, { headers });
  }

  const api = createClient<paths>({ baseUrl: options.baseUrl, fetch: authorizedFetch });
  const remember: Middleware = {
    async onResponse({ request, response }) {
      const path = new URL(request.url).pathname;
      if (response.ok && ["/api/auth/login", "/api/auth/register", "/api/auth/refresh"].includes(path)) {
        const body = (await response.clone().json()) as Schemas["AuthTokens"];
        tokens.accessToken = body.accessToken ?? undefined;
        tokens.refreshToken = body.refreshToken ?? undefined;
      }
      return response;
    },
  };
  api.use(remember);

  /** Follows an NDJSON stream (watch, log tail): one parsed message per line, until it ends. */
  async function* stream<T>(path: string, init: { signal?: AbortSignal } = {}): AsyncGenerator<T> {
    const response = await authorizedFetch(new Request(`${options.baseUrl}${path}`, { signal: init.signal }));
    if (!response.ok || !response.body) {
      throw new The0Error(response.status, await response.json().catch(() => undefined), response.headers);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) yield JSON.parse(line) as T;
      }
    }
    if (buffer.trim()) yield JSON.parse(buffer) as T;
  }

  return {
    api,
    tokens,
    refresh,
    watchBot: (id: string, init?: { signal?: AbortSignal }) =>
      stream<Schemas["WatchBotResponse"]>(`/api/bots/${encodeURIComponent(id)}/watch`, init),
    watchCustomBot: (id: string, init?: { signal?: AbortSignal }) =>
      stream<Schemas["WatchCustomBotResponse"]>(`/api/custom-bots/${encodeURIComponent(id)}/watch`, init),
    watchBacktest: (id: string, init?: { signal?: AbortSignal }) =>
      stream<Schemas["WatchBacktestResponse"]>(`/api/backtests/${encodeURIComponent(id)}/watch`, init),
    streamBotLogs: (id: string, init?: { signal?: AbortSignal }) =>
      stream<Schemas["StreamBotLogsResponse"]>(`/api/bots/${encodeURIComponent(id)}/logs/stream`, init),
    /** POST the raw zip (not JSON) with upload progress (XMLHttpRequest: fetch has none). */
    uploadCustomBot(zip: Blob, onProgress?: (sent: number, total: number) => void): Promise<Schemas["CustomBot"]> {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", `${options.baseUrl}/api/custom-bots/upload`);
        xhr.setRequestHeader("content-type", "application/zip");
        if (tokens.accessToken) xhr.setRequestHeader("authorization", `Bearer ${tokens.accessToken}`);
        else if (options.apiKey) xhr.setRequestHeader("x-api-key", options.apiKey);
        xhr.upload.onprogress = (event) => onProgress?.(event.loaded, event.total);
        xhr.onload = () => {
          const body = xhr.responseText ? JSON.parse(xhr.responseText) : undefined;
          if (xhr.status === 200) resolve(body as Schemas["CustomBot"]);
          else reject(new The0Error(xhr.status, body, new Headers({ "x-request-id": xhr.getResponseHeader("x-request-id") ?? "" })));
        };
        xhr.onerror = () => reject(new The0Error(0, undefined));
        xhr.send(zip);
      });
    },
  };
}

/** A non-2xx answer: its HTTP status, ErrorInfo reason and request id (pass the response's headers). */
export class The0Error extends Error {
  readonly reason: string;
  readonly requestId: string;
  constructor(readonly status: number, readonly body: unknown, headers?: Headers) {
    const { reason, requestId } = errorReason(body, headers);
    super(`${status} ${reason || "network error"}${requestId ? ` (request ${requestId})` : ""}`);
    this.reason = reason;
    this.requestId = requestId;
  }
}
