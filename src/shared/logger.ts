import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Creates the process logger. Library code never creates its own: it receives a Logger
 * (or a child of one) from whoever constructed it. Level from CONCORD_LOG_LEVEL.
 */
export function createLogger(options: { name?: string; level?: string } = {}): Logger {
  return pino({
    name: options.name ?? 'concord',
    level: options.level ?? process.env.CONCORD_LOG_LEVEL ?? 'info',
  });
}

/** A logger that drops everything: the default for unit tests and the simulator. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
