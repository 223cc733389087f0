import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Puts `text` into a markdown file between `<!-- NAME:start -->` and `<!-- NAME:end -->`, replacing what was there. */
export function writeDocsBlock(path: string, name: string, text: string): void {
  const doc = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const block = `<!-- ${name}:start -->\n${text}\n<!-- ${name}:end -->`;
  const re = new RegExp(`<!-- ${name}:start -->[\\s\\S]*<!-- ${name}:end -->`);
  writeFileSync(path, re.test(doc) ? doc.replace(re, () => block) : `${doc}\n${block}\n`);
}
