/**
 * `spngd certs --out DIR --hosts ps,worker-1,owner-1,localhost`: a development CA (DIR/ca.crt,
 * DIR/ca.key) and one certificate per host (DIR/<host>.crt, DIR/<host>.key) for mutual TLS between
 * actors, made with @peculiar/x509 and Node's WebCrypto (src/security/x509.ts; no openssl needed). An existing CA in DIR
 * is reused, so hosts can be added later. --token also writes DIR/token, a random bearer token.
 *
 * An entry may name the actor's role and id as ROLE/ID (worker/worker-1, owner/owner-2, ps/ps-0;
 * ID `*`: any id of the role), e.g. `--hosts 10.0.0.5+owner/owner-1`: the certificate then carries
 * the subjectAltName URI spngd://owner/owner-1, the PS accepts from it only what owner-1 may say,
 * and the files are named after the id (owner-1.crt). A certificate without one names no role.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { positiveInteger } from './option-parsers.js';
import { checkHostName } from '../security/names.js';
import type { CertificateAuthority } from '../security/x509.js';

export class CertsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CertsError';
  }
}

const IDENTITY = /^(worker|owner|ps)\/([A-Za-z0-9._-]{1,128}|\*)$/;

/** The ROLE/ID element of a --hosts entry, if any. */
export function entryIdentity(names: string[]): { role: string; id: string; uri: string } | undefined {
  const m = names.map((n) => IDENTITY.exec(n)).find((x) => x);
  return m ? { role: m[1], id: m[2], uri: `spngd://${m[1]}/${m[2]}` } : undefined;
}

/** "ps,worker-1+w1.example.com+10.0.0.7+worker/worker-1": one certificate per comma, extra names (and a ROLE/ID) after "+". */
export function parseHosts(spec: string): string[][] {
  const entries = spec
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '')
    .map((e) =>
      e
        .split('+')
        .map((n) => n.trim())
        .filter((n) => n !== ''),
    );
  if (entries.length === 0) throw new InvalidArgumentError('--hosts needs at least one host name');
  for (const names of entries) {
    const ids = names.filter((n) => n.includes('/'));
    if (ids.length > 1) throw new InvalidArgumentError(`"${names.join('+')}" names more than one ROLE/ID`);
    if (ids.length === 1 && !IDENTITY.test(ids[0]))
      throw new InvalidArgumentError(`"${ids[0]}" is not ROLE/ID (ROLE: worker, owner or ps; ID: letters, digits, ".", "_", "-", or "*")`);
    if (ids.length === names.length) throw new InvalidArgumentError(`"${names.join('+')}" needs a host name besides its ROLE/ID`);
    for (const n of names) {
      if (n.includes('/')) continue;
      try {
        checkHostName(n);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    }
  }
  return entries;
}

/** File name stem of a certificate: its id if it names one, else its first name (":" of IPv6 addresses becomes "_"). */
export function certFileStem(names: string[]): string {
  const identity = entryIdentity(names);
  if (identity) return identity.id === '*' ? `${identity.role}-any` : identity.id.toLowerCase();
  return names[0].toLowerCase().replace(/:/g, '_');
}

export interface CertsResult {
  dir: string;
  caCreated: boolean;
  files: string[];
}

function write(file: string, text: string, secret: boolean): void {
  writeFileSync(file, text, { mode: secret ? 0o600 : 0o644 });
  chmodSync(file, secret ? 0o600 : 0o644); // also when the file existed (--force)
}

/** Writes the CA (unless DIR has one) and the hosts' certificates. */
export async function makeCerts(opts: { out: string; hosts: string[][]; days?: number; token?: boolean; force?: boolean }): Promise<CertsResult> {
  const dir = opts.out;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CertsError(`${dir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const caCrt = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  const planned = opts.hosts.map((names) => ({ names, crt: join(dir, `${certFileStem(names)}.crt`), key: join(dir, `${certFileStem(names)}.key`) }));
  const stems = planned.map((p) => p.crt);
  const dup = stems.find((s, i) => stems.indexOf(s) !== i);
  if (dup) throw new CertsError(`--hosts names ${dup} twice`);
  if (!opts.force) {
    const taken = [...planned.flatMap((p) => [p.crt, p.key]), ...(opts.token ? [join(dir, 'token')] : [])].filter((f) => existsSync(f));
    if (taken.length > 0) throw new CertsError(`${taken.join(', ')} already exist${taken.length === 1 ? 's' : ''} (--force replaces them)`);
  }
  // Loaded here, not at startup: only `spngd certs` builds certificates.
  const { createCertificateAuthority, issueCertificate, loadCertificateAuthority, newToken } = await import('../security/x509.js');
  let ca: CertificateAuthority;
  const caCreated = !(existsSync(caCrt) && existsSync(caKey));
  const files: string[] = [];
  try {
    if (caCreated) {
      if (existsSync(caCrt) || existsSync(caKey)) throw new CertsError(`${dir} holds only one of ca.crt and ca.key; remove it or add the other`);
      ca = await createCertificateAuthority();
      write(caCrt, ca.cert, false);
      write(caKey, ca.key, true);
      files.push(caCrt, caKey);
    } else {
      try {
        ca = await loadCertificateAuthority(readFileSync(caCrt, 'utf8'), readFileSync(caKey, 'utf8'));
      } catch (err) {
        throw new CertsError(`the CA in ${dir} (ca.crt, ca.key) cannot be used: ${(err as Error).message}`);
      }
    }
    for (const p of planned) {
      const identity = entryIdentity(p.names);
      const hosts = p.names.filter((n) => !n.includes('/'));
      const issued = await issueCertificate(ca, hosts, {
        ...(opts.days === undefined ? {} : { days: opts.days }),
        ...(identity ? { identity: identity.uri } : {}),
      });
      write(p.crt, issued.cert, false);
      write(p.key, issued.key, true);
      files.push(p.crt, p.key);
    }
    if (opts.token) {
      const f = join(dir, 'token');
      write(f, `${newToken()}\n`, true);
      files.push(f);
    }
  } catch (err) {
    if (err instanceof CertsError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new CertsError(`${dir}: ${code ? `cannot write (${code})` : (err as Error).message}`);
  }
  return { dir, caCreated, files };
}

export function addCertsCommand(program: Command): void {
  program
    .command('certs')
    .description('create a development CA and certificates for mutual TLS between actors (and a bearer token with --token)')
    .requiredOption('--out <dir>', 'directory for ca.crt, ca.key and <host>.crt/.key (an existing CA in it is reused)')
    .requiredOption(
      '--hosts <list>',
      'comma-separated host names or IPs, one certificate each; "name+alias+10.0.0.5" puts several names in one, "name+owner/owner-1" also the role and id the PS accepts it as',
      parseHosts,
    )
    .option('--days <n>', 'validity of the host certificates, days', positiveInteger('--days'), 825)
    .option('--token', 'also write <dir>/token, a random bearer token for --token-file')
    .option('--force', 'replace existing host certificates and token')
    .action(async (o: { out: string; hosts: string[][]; days: number; token?: boolean; force?: boolean }) => {
      const r = await makeCerts({ out: o.out, hosts: o.hosts, days: o.days, ...(o.token ? { token: true } : {}), ...(o.force ? { force: true } : {}) });
      process.stdout.write(`${r.caCreated ? 'created a new CA' : 'used the existing CA'} in ${r.dir}; wrote:\n${r.files.map((f) => `  ${f}`).join('\n')}\n`);
      const first = certFileStem(o.hosts[0]);
      process.stdout.write(
        `Each host uses ca.crt, its own .crt and .key, e.g.:\n  spngd ps --listen ${o.hosts[0].find((n) => !n.includes('/'))}:7000 --tls-ca ${join(r.dir, 'ca.crt')} --tls-cert ${join(r.dir, `${first}.crt`)} --tls-key ${join(r.dir, `${first}.key`)}${o.token ? ` --token-file ${join(r.dir, 'token')}` : ''}\n` +
          'Keep the .key files (and ca.key, which can issue more certificates) private.\n',
      );
    });
}
