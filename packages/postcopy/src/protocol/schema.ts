// Messages as JSON objects, checked field by field against a schema: what a peer (another agent,
// a child process's JSON lines) sends is taken only once it fits. Pure.
import { ProtocolError } from '../errors.js';

/** A field's kind; a trailing '?' makes it optional. */
export type Kind = 'int' | 'uint' | 'number' | 'string' | 'bool' | 'hex' | 'object' | 'array' | 'ints';
export type Schema = Record<string, Kind | `${Kind}?`>;

/**
 * A name the agents pass around and use in paths: an agent's, a migration's, a host class's. 1 to
 * 64 letters, digits, '.', '_' or '-'.
 */
export const isName = (v: unknown): v is string => typeof v === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(v);

export function fits(kind: Kind, v: unknown): boolean {
  switch (kind) {
    case 'int':
      return Number.isSafeInteger(v);
    case 'uint':
      return Number.isSafeInteger(v) && (v as number) >= 0;
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'string':
      return typeof v === 'string' && v.length <= 65536;
    case 'bool':
      return typeof v === 'boolean';
    case 'hex':
      return typeof v === 'string' && v.length <= 1024 && /^(?:[0-9a-f]{2})*$/.test(v);
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'array':
      return Array.isArray(v);
    case 'ints':
      return Array.isArray(v) && v.every((x) => Number.isSafeInteger(x));
  }
}

/**
 * The schema's fields of body (others dropped), each checked; `what` names the message in the
 * ProtocolError (ERR_PROTOCOL) thrown when one does not fit.
 */
export function checkFields(what: string, schema: Schema, body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ProtocolError(`${what}: the body is not a JSON object`);
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(schema)) {
    const optional = spec.endsWith('?');
    const kind = (optional ? spec.slice(0, -1) : spec) as Kind;
    const v = (body as Record<string, unknown>)[name];
    if (v === undefined || v === null) {
      if (!optional) throw new ProtocolError(`${what}: field ${name} is missing`);
      continue;
    }
    if (!fits(kind, v)) throw new ProtocolError(`${what}: field ${name} must be ${kind}, not ${JSON.stringify(v)?.slice(0, 80)}`);
    out[name] = v;
  }
  return out;
}
