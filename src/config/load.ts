/**
 * Reads a training config (YAML or JSON), lays command-line overrides over it and validates the
 * result; every problem becomes one ConfigError line naming the key.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ModelSpecError, resolveModelSpec } from '../nn/models.js';
import { resolveTrainConfig, type TrainConfig } from './schema.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    // YAML is a superset of JSON, so one parser reads both.
    return parseYaml(text) ?? {};
  } catch (err) {
    throw new ConfigError(`config ${file}: not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** Deep merge of plain objects; `over` wins, arrays and scalars are replaced whole. */
export function mergeConfig(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v !== undefined) out[k] = mergeConfig(base[k], v);
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One line per problem: "optimizer.lr: Invalid input: expected number, received string". */
export function describeZodError(err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const path = i.path.map(String).join('.') || '(top level)';
      if (i.code === 'unrecognized_keys') {
        const keys = i.keys.map((k) => (path === '(top level)' ? k : `${path}.${k}`));
        return `unknown key${keys.length > 1 ? 's' : ''} ${keys.join(', ')}`;
      }
      return `${path}: ${i.message}`;
    })
    .join('; ');
}

/** Config file (optional) + overrides → validated config. */
export function loadTrainConfig(file: string | undefined, overrides: unknown = {}): TrainConfig {
  const base = file ? readConfigFile(file) : {};
  const merged = mergeConfig(base, overrides);
  const where = file ? `config ${file}` : 'config';
  // The model's own validator names the bad layer; zod's union error would only say "invalid".
  if (isPlainObject(merged) && merged.model !== undefined) {
    try {
      resolveModelSpec(merged.model);
    } catch (err) {
      if (err instanceof ModelSpecError) throw new ConfigError(`${where}: model: ${err.message}`);
      throw err;
    }
  }
  try {
    return resolveTrainConfig(merged);
  } catch (err) {
    if (err instanceof z.ZodError) throw new ConfigError(`${where}: ${describeZodError(err)}`);
    throw err;
  }
}
