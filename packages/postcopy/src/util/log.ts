import pino, { destination, type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * pino to stderr (or to `file`, appended, written as it goes); level from POSTCOPY_LOG (default
 * "warn") so stdout stays for results.
 */
export function createLogger(name: string, level = process.env.POSTCOPY_LOG ?? 'warn', file?: string): Logger {
  return pino({ name, level }, file === undefined ? destination(2) : destination({ dest: file, sync: true, append: true }));
}

export const silentLogger: Logger = pino({ level: 'silent' });
