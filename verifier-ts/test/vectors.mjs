import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const dir = fileURLToPath(new URL('../../testdata/vectors/', import.meta.url));
export function load(name) { return JSON.parse(readFileSync(dir + name, 'utf8')); }
