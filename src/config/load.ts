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

/**
 * The config against the data: a global batch larger than the training set (after
 * data.trainLimit) is one ConfigError line, before any actor starts.
 */
export function checkAgainstData(config: TrainConfig, trainSize: number): void {
  if (config.batchSize > trainSize) {
    const limited = config.data.trainLimit !== undefined && config.data.trainLimit < config.batchSize;
    throw new ConfigError(
      `batchSize ${config.batchSize} is larger than the training set (${trainSize} samples${limited ? `, data.trainLimit ${config.data.trainLimit}` : ''}); lower batchSize${limited ? ' or raise data.trainLimit' : ''}`,
    );
  }
}

/** A config as JSON with sorted keys and without the host-specific security paths, for comparing two. */
export function canonicalConfig(config: TrainConfig): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object')
      return Object.fromEntries(
        Object.keys(v as object)
          .sort()
          .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    return v;
  };
  return JSON.stringify(sort({ ...config, security: undefined }));
}

/** The first differing key paths of two configs (for the refusal message). */
export function configDifferences(a: TrainConfig, b: TrainConfig, max = 5): string[] {
  const out: string[] = [];
  const walk = (x: unknown, y: unknown, path: string) => {
    if (out.length >= max) return;
    const bothObjects = x && y && typeof x === 'object' && typeof y === 'object' && !Array.isArray(x) && !Array.isArray(y);
    if (bothObjects) {
      const keys = new Set([...Object.keys(x as object), ...Object.keys(y as object)]);
      for (const k of [...keys].sort())
        if (k !== 'security' || path) walk((x as Record<string, unknown>)[k], (y as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
    } else if (JSON.stringify(x) !== JSON.stringify(y)) {
      out.push(`${path} (${JSON.stringify(x) ?? 'unset'} recorded, ${JSON.stringify(y) ?? 'unset'} given)`);
    }
  };
  walk(a, b, '');
  return out;
}
