/**
 * The context of the request (or timer, stream batch, sweeper run) a piece of code is running for,
 * carried across awaits with AsyncLocalStorage: `log()` (shared/log.ts) merges it into every line,
 * so every line of one request carries its `request_id`, the caller's `principal` and the
 * `operation`. Set by the entry points: httpRoute (shared/http.ts), the WebSocket handlers, the
 * stream notifier, the timer and the sweeper. Metrics may read it too (`currentContext()`).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

export interface RequestContext {
  /** API Gateway's request id for an HTTP or WebSocket request; a fresh id for internal work. */
  readonly request_id: string;
  /** The caller's principal (core/principal.ts), when there is one (internal work has none). */
  readonly principal?: string;
  /** What is being done: a route's operation (e.g. "acquire"), or "timer", "sweep", "stream". */
  readonly operation: string;
}

const store = new AsyncLocalStorage<RequestContext>();

/** Runs `fn` with `context` as the current context (nested runs replace it for their duration). */
export function withRequestContext<T>(context: RequestContext, fn: () => T): T {
  const clean = Object.fromEntries(
    Object.entries(context).filter(([, value]) => value !== undefined),
  ) as unknown as RequestContext;
  return store.run(clean, fn);
}

/** The context of the code running now, if any. */
export const currentContext = (): RequestContext | undefined => store.getStore();

/** A context for work no client asked for (a timer, a stream batch, a sweeper run). */
export const internalContext = (operation: string, id: string = randomUUID()): RequestContext => ({
  request_id: id,
  operation,
});
