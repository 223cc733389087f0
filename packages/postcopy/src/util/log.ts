import pino, { destination, type Logger } from 'pino';

export type { Logger } from 'pino';

/** pino to stderr; level from POSTCOPY_LOG (default "warn") so stdout stays for results. */
export function createLogger(name: string, level = process.env.POSTCOPY_LOG ?? 'warn'): Logger {
  return pino({ name, level }, destination(2));
}

export const silentLogger: Logger = pino({ level: 'silent' });
