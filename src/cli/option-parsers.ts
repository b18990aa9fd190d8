/**
 * Parsers for numeric flags: a bad value is a usage error that names the flag, before anything
 * starts (commander prints it and exits 1).
 */
import { InvalidArgumentError } from 'commander';

export function number(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} must be a number, got "${v}"`);
    return n;
  };
}

export function positiveNumber(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} must be a positive number, got "${v}"`);
    return n;
  };
}

export function positiveInteger(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a positive whole number, got "${v}"`);
    return n;
  };
}
