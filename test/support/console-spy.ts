/**
 * A console-shaped logger (error, warn, info, debug; no child, no pino) that records every
 * call: what a service may hand the SDK instead of a pino logger.
 */
export interface ConsoleCall {
  level: 'error' | 'warn' | 'info' | 'debug';
  args: unknown[];
}

export function consoleSpy(): {
  calls: ConsoleCall[];
  logger: Record<ConsoleCall['level'], (...args: unknown[]) => void>;
} {
  const calls: ConsoleCall[] = [];
  const method =
    (level: ConsoleCall['level']) =>
    (...args: unknown[]) =>
      void calls.push({ level, args });
  return {
    calls,
    logger: {
      error: method('error'),
      warn: method('warn'),
      info: method('info'),
      debug: method('debug'),
    },
  };
}
