/** Host names and IP addresses as certificates carry them (no X.509 library needed). */
import { isIP } from 'node:net';

/** IPv4 or IPv6 text → 4 or 16 bytes. */
export function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  if (isIP(ip) !== 6) throw new Error(`${ip} is not an IP address`);
  let text = ip;
  let tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tail = v4[1].split('.').map(Number);
    text = `${text.slice(0, -v4[1].length)}0:0`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const groups = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const h = groups(head);
  const r = rest === undefined ? [] : groups(rest);
  const all = rest === undefined ? h : [...h, ...Array<number>(8 - h.length - r.length).fill(0), ...r];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(g, 2 * i));
  if (tail.length) out.set(tail, 12);
  return out;
}

const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Throws unless `host` is a DNS name or an IP address. */
export function checkHostName(host: string): void {
  if (isIP(host) === 0 && !DNS_NAME.test(host)) throw new Error(`"${host}" is not a host name or IP address`);
}
