// What the CLI's commands say with --json: one JSON object a line, each an event of its command,
// declared here once for the CLI that prints them and for the programs that start the CLI as a
// child and wait for what it says (migrate --netns, bench). Pure.
import { ProtocolError } from '../errors.js';
import { checkFields, type Schema } from './schema.js';

/** Each command's events and their fields. */
export interface CliEvents {
  serve: {
    listening: { endpoint: string; regions: readonly unknown[] };
    'images-listening': { endpoint: string };
    done: { complete: boolean; stats: { bytesSent: number; pagesSent: number } & Record<string, number> };
  };
  'lazy-pages': {
    images: { files: number };
    listening: { socket: string };
    done: { tasks: unknown[]; zombies: number[]; restoreFinished: boolean; restoreExitAt: number | null; ms: number };
  };
  agent: {
    listening: { agent: string; endpoint: string; socket: string; metrics?: string };
    stopped: Record<string, never>;
  };
}

export type CliCommand = keyof CliEvents;
export type CliEventName<C extends CliCommand> = keyof CliEvents[C] & string;
export type CliEvent<C extends CliCommand, E extends CliEventName<C>> = { event: E } & CliEvents[C][E];

const SCHEMAS: { [C in CliCommand]: { [E in CliEventName<C>]: Schema } } = {
  serve: {
    listening: { endpoint: 'string', regions: 'array' },
    'images-listening': { endpoint: 'string' },
    done: { complete: 'bool', stats: 'object' },
  },
  'lazy-pages': {
    images: { files: 'uint' },
    listening: { socket: 'string' },
    done: { tasks: 'array', zombies: 'ints', restoreFinished: 'bool', restoreExitAt: 'number?', ms: 'number' },
  },
  agent: {
    listening: { agent: 'string', endpoint: 'string', socket: 'string', metrics: 'string?' },
    stopped: {},
  },
};

/** The event as a JSON line, checked against its schema (a CLI that printed a malformed event is a bug). */
export function formatCliEvent<C extends CliCommand, E extends CliEventName<C>>(command: C, event: E, fields: CliEvents[C][E]): string {
  const schema = (SCHEMAS[command] as Record<string, Schema>)[event];
  checkFields(`${command} ${event}`, schema, fields);
  return JSON.stringify({ event, ...fields });
}

/**
 * A line of a command's output, if it is the event asked for: null for any other line (text, other
 * events); throws ProtocolError if it claims to be that event and does not fit its schema.
 */
export function parseCliEvent<C extends CliCommand, E extends CliEventName<C>>(command: C, event: E, line: string): CliEvent<C, E> | null {
  if (!line.startsWith('{')) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return null;
  }
  if ((parsed as { event?: unknown })?.event !== event) return null;
  const schema = (SCHEMAS[command] as Record<string, Schema>)[event];
  if (!schema) throw new ProtocolError(`${command} has no event ${event}`);
  // Every field is kept (the schema names those that must be there, and their kinds).
  checkFields(`${command} ${event}`, schema, parsed);
  return parsed as CliEvent<C, E>;
}
