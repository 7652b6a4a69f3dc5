/**
 * The client SDK's logger: what a service may pass, and the default when it passes none.
 *
 * The SDK logs the way pino does — `log.warn({ xid, err }, 'message')` on children made
 * with `log.child({ component })`. A service may hand it:
 * - a pino logger (used as is);
 * - any logger with the usual level methods — `console`, winston, bunyan, a test spy: it
 *   is adapted, and receives `(message, fields)` with the child bindings merged in.
 * Without one, the SDK logs warnings and errors to stderr through pino at level `warn`
 * (CONCORD_LOG_LEVEL overrides the level): a dropped transaction header, an unretryable
 * phase two or a fence that refused a confirm must never go unseen.
 */
import { pino, type Logger } from 'pino';
import { BadRequestError } from '../shared/errors.ts';

export type { Logger };

/** One level method, as console and most loggers have it. */
export type LogMethod = (...args: unknown[]) => void;

/** Any logger with the usual level methods (`console` is one). `child` is used when present. */
export interface LoggerLike {
  error: LogMethod;
  warn: LogMethod;
  info: LogMethod;
  debug: LogMethod;
  trace?: LogMethod;
  fatal?: LogMethod;
  child?: (bindings: Record<string, unknown>) => LoggerLike;
}

/** The default level of the SDK's own logger. */
export const DEFAULT_CLIENT_LOG_LEVEL = 'warn';

/** pino at `warn` on stderr: the SDK's logger when the service names none. */
export function defaultClientLogger(name = 'concord'): Logger {
  return pino(
    { name, level: process.env.CONCORD_LOG_LEVEL ?? DEFAULT_CLIENT_LOG_LEVEL },
    pino.destination({ dest: 2, sync: true }),
  );
}

function isPino(logger: LoggerLike): logger is LoggerLike & Logger {
  const candidate = logger as Partial<Logger>;
  return (
    typeof candidate.child === 'function' &&
    typeof candidate.bindings === 'function' &&
    typeof candidate.levels === 'object'
  );
}

function isLoggerLike(value: unknown): value is LoggerLike {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return ['error', 'warn', 'info', 'debug'].every((m) => typeof v[m] === 'function');
}

/** Splits pino's call shapes — (fields, msg), (err, msg), (msg) — into a message and fields. */
function splitArgs(args: unknown[]): { message: string; fields: Record<string, unknown> } {
  const [first, second] = args;
  if (typeof first === 'string') return { message: first, fields: {} };
  const message = typeof second === 'string' ? second : '';
  if (first instanceof Error) return { message, fields: { err: first } };
  if (typeof first === 'object' && first !== null)
    return { message, fields: first as Record<string, unknown> };
  return { message, fields: {} };
}

/**
 * A pino-shaped view of a foreign logger: the methods the SDK calls, bindings merged into each
 * record.
 */
function adapt(target: LoggerLike, bindings: Record<string, unknown>): Logger {
  const method =
    (name: 'error' | 'warn' | 'info' | 'debug', fallback?: LogMethod) =>
    (...args: unknown[]) => {
      const { message, fields } = splitArgs(args);
      const fn = fallback ?? target[name];
      fn.call(target, message, { ...bindings, ...fields });
    };
  const view = {
    level: 'trace',
    fatal: method('error', target.fatal),
    error: method('error'),
    warn: method('warn'),
    info: method('info'),
    debug: method('debug'),
    trace: method('debug', target.trace),
    silent: () => {},
    child: (more: Record<string, unknown>) => adapt(target, { ...bindings, ...more }),
    bindings: () => ({ ...bindings }),
    isLevelEnabled: () => true,
  };
  return view as unknown as Logger;
}

/**
 * The logger the SDK uses for `given`: pino as is, another logger adapted, none → the
 * default (pino at warn on stderr). Anything else is refused with BadRequestError.
 */
export function toClientLogger(given: unknown, name?: string): Logger {
  if (given === undefined || given === null) return defaultClientLogger(name);
  if (!isLoggerLike(given))
    throw new BadRequestError(
      'logger must be a pino logger or an object with error, warn, info and debug methods (console works)',
    );
  return isPino(given) ? given : adapt(given, {});
}
