/**
 * The few named errors of kiapi. Each carries the HTTP status it maps to; the server has one error
 * handler that turns them into `{"detail": ...}` bodies (docs/compatibility.md §4). Anything that is not a
 * KiapiError is an internal fault: logged in full, answered as a 500 whose body hides internals.
 */
export abstract class KiapiError extends Error {
  abstract readonly status: number;
  /** Extra response headers (e.g. Retry-After). */
  headers: Record<string, string> = {};
  /**
   * The request field at fault and a machine-readable code, where a route knows them (the
   * OpenAI-shaped errors carry both as `param` and `code`).
   */
  param?: string | null;
  code?: string | null;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** 400: the request names something that cannot be used (unknown model, unresolvable input). */
export class InputError extends KiapiError {
  readonly status = 400;
}

/** 400: the body cannot be parsed as what the route takes (a broken multipart upload). */
export class MalformedBodyError extends KiapiError {
  readonly status = 400;
}

/** 401: a bearer token is configured and the request did not present it. */
export class UnauthorizedError extends KiapiError {
  readonly status = 401;
  constructor() {
    super('unauthorized');
  }
}

/** 404: an id that is well formed but unknown. */
export class NotFoundError extends KiapiError {
  readonly status = 404;
}

/** 409: the operation does not fit the resource's state (e.g. cancel of a finished job). */
export class ConflictError extends KiapiError {
  readonly status = 409;
}

/** 413: a body, upload or input is larger than the configured limit. */
export class TooLargeError extends KiapiError {
  readonly status = 413;
}

/** 422: the request is well formed JSON but breaks a capability rule (docs/compatibility.md §4.3). */
export class RuleError extends KiapiError {
  readonly status = 422;
}

/** 429: the queue is full; `Retry-After` says when to try again. */
export class BusyError extends KiapiError {
  readonly status = 429;
  constructor(message: string, retryAfterS: number) {
    super(message);
    this.headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfterS)));
  }
}

/** 503: the server cannot serve this now for setup or memory reasons; the message says how to fix it. */
export class UnavailableError extends KiapiError {
  readonly status = 503;
}

/**
 * 507: the disk (or the process's file size limit) ran out while kiapi stored bytes: an
 * artifact, an upload or an input. The message names the directory to free space in.
 */
export class StorageFullError extends KiapiError {
  readonly status = 507;
}

/** 504: a sync wait ran out; the job keeps running. */
export class SyncTimeoutError extends KiapiError {
  readonly status = 504;
}

/**
 * A job was canceled (by the cancel endpoint, DELETE, or shutdown). Not an HTTP error of its own:
 * the job ends with status `canceled`. A sync waiter gets 409 because the job will never produce
 * its result.
 */
export class CanceledError extends KiapiError {
  readonly status = 409;
  constructor(message = 'job was canceled') {
    super(message);
  }
}

export function isKiapiError(err: unknown): err is KiapiError {
  return err instanceof KiapiError;
}

/**
 * 500 with a message the client should see: the engine failed (crash, out of memory, a model
 * error). Unexpected internal faults are not EngineErrors; their details stay in the server log.
 */
export class EngineError extends KiapiError {
  readonly status = 500;
}

/**
 * A setup step (kiapi activate / deactivate / check) cannot go on: no usable Python, an
 * unsupported platform, a gated repo without access, not enough disk. The message says what to do.
 * Raised by the CLI's setup commands, not by requests; 503 if one ever reaches HTTP, because it
 * means the engine or the weights are not set up.
 */
export class SetupError extends KiapiError {
  readonly status = 503;
}

/**
 * 403: the request is refused whatever it carries: a Host that is not this server's (DNS
 * rebinding) or a cross-site browser request that would change state. The message names the
 * setting that allows it.
 */
export class ForbiddenError extends KiapiError {
  readonly status = 403;
}

/**
 * Client input quoted in a message: at most `max` characters, so an answer (and the log) never
 * echoes a megabyte the client sent.
 */
export function clip(text: string, max = 200): string {
  return text.length > max ? `${head(text, max)}…(${text.length} chars)` : text;
}

/**
 * The first `max` UTF-16 units of `text`, one fewer when the cut would split a surrogate pair: a
 * lone half is no character, so an answer quoting it was not valid Unicode (a fuzzer's JSON
 * library refused a 422 that quoted a clipped '𝕏…').
 */
export function head(text: string, max: number): string {
  const cut = text.slice(0, max);
  const last = cut.charCodeAt(cut.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut;
}
