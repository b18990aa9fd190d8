/**
 * A development certificate authority with Node's crypto only (no openssl needed): a CA
 * certificate and, for each host, a certificate for both TLS server and client use (every spngd
 * actor is both), with the host's names in subjectAltName. Keys are ECDSA P-256; a CA loaded
 * from files may also be RSA.
 *
 * Node can sign but not build certificates, so the X.509 structures (RFC 5280) are DER-encoded
 * here; `X509Certificate` parses the result back, and test/security-certs.test.ts also checks
 * them with `openssl verify` when openssl is installed.
 */
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

// ---- DER encoding -----------------------------------------------------------------------------

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const tlv = (tag: number, content: Buffer): Buffer => Buffer.concat([Buffer.from([tag]), derLength(content.length), content]);
const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.concat([Buffer.from([unused]), b]));
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const NULL = Buffer.from([0x05, 0x00]);
/** [n] EXPLICIT, constructed. */
const explicit = (n: number, content: Buffer) => tlv(0xa0 | n, content);
/** [n] IMPLICIT, primitive. */
const implicit = (n: number, content: Buffer) => tlv(0x80 | n, content);

/** A non-negative INTEGER from big-endian bytes. */
function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0] & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [];
  const push = (v: number) => {
    const groups: number[] = [v & 0x7f];
    for (v = Math.floor(v / 128); v > 0; v = Math.floor(v / 128)) groups.unshift(0x80 | (v & 0x7f));
    out.push(...groups);
  };
  push(arcs[0] * 40 + arcs[1]);
  for (const a of arcs.slice(2)) push(a);
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5), to the second. */
function time(d: Date): Buffer {
  const s = d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z'); // YYYYMMDDHHMMSSZ
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(s.slice(2), 'latin1')) : tlv(0x18, Buffer.from(s, 'latin1'));
}

// ---- minimal DER reading (for a CA certificate loaded from a file) -----------------------------

interface Element {
  tag: number;
  /** Offsets of the whole element and of its contents in the buffer. */
  start: number;
  contentStart: number;
  end: number;
}

function readElement(b: Buffer, at: number): Element {
  const tag = b[at];
  let len = b[at + 1];
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p++];
  }
  if (tag === undefined || p + len > b.length) throw new Error('truncated DER');
  return { tag, start: at, contentStart: p, end: p + len };
}

function children(b: Buffer, e: Element): Element[] {
  const out: Element[] = [];
  for (let p = e.contentStart; p < e.end; ) {
    const c = readElement(b, p);
    out.push(c);
    p = c.end;
  }
  return out;
}

/** The subject Name of a DER certificate, byte for byte (a child's issuer must equal it exactly). */
function subjectDer(cert: Buffer): Buffer {
  const tbs = children(cert, readElement(cert, 0))[0];
  const fields = children(cert, tbs);
  const i = fields[0].tag === 0xa0 ? 1 : 0; // [0] version
  const subject = fields[i + 4]; // serial, signature, issuer, validity, subject
  return cert.subarray(subject.start, subject.end);
}

/** Key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1, as openssl computes it). */
function keyIdentifier(spki: Buffer): Buffer {
  const [, key] = children(spki, readElement(spki, 0));
  return createHash('sha1').update(spki.subarray(key.contentStart + 1, key.end)).digest();
}

// ---- certificates -------------------------------------------------------------------------------

const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  sha256WithRsa: '1.2.840.113549.1.1.11',
};

function name(cn: string): Buffer {
  return seq(set(seq(oid(OID.organization), utf8('spngd'))), set(seq(oid(OID.commonName), utf8(cn))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
}

function signatureAlgorithm(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === 'ec') return seq(oid(OID.ecdsaWithSha256));
  if (key.asymmetricKeyType === 'rsa') return seq(oid(OID.sha256WithRsa), NULL);
  throw new Error(`CA keys of type ${key.asymmetricKeyType} are not supported (use EC or RSA)`);
}

/** IPv4 or IPv6 text → 4 or 16 bytes. */
export function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  if (isIP(ip) !== 6) throw new Error(`${ip} is not an IP address`);
  let text = ip;
  let tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tail = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + '0:0';
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

export interface CertificateAuthority {
  /** PEM. */
  cert: string;
  key: string;
  subjectDer: Buffer;
  keyId: Buffer;
  privateKey: KeyObject;
}

export interface IssuedCertificate {
  cert: string;
  key: string;
}

function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function serialNumber(): Buffer {
  const b = randomBytes(16);
  b[0] &= 0x7f;
  b[0] |= 0x01; // positive and 16 bytes long
  return b;
}

const DAY = 86_400_000;

function certificate(opts: {
  subject: Buffer;
  issuer: Buffer;
  spki: Buffer;
  days: number;
  extensions: Buffer[];
  signer: KeyObject;
}): Buffer {
  // Valid from a few minutes ago: clocks of the hosts may differ a little.
  const now = Date.now();
  const algorithm = signatureAlgorithm(opts.signer);
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))), // v3
    integer(serialNumber()),
    algorithm,
    opts.issuer,
    seq(time(new Date(now - 5 * 60_000)), time(new Date(now + opts.days * DAY))),
    opts.subject,
    opts.spki,
    explicit(3, seq(...opts.extensions)),
  );
  return seq(tbs, algorithm, bits(sign('sha256', tbs, opts.signer)));
}

function newKey(): { privateKey: KeyObject; spki: Buffer; pem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), pem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/** A new self-signed CA (keyCertSign, cRLSign; path length 0: it issues only end-entity certificates). */
export function createCertificateAuthority(opts: { commonName?: string; days?: number } = {}): CertificateAuthority {
  const key = newKey();
  const subject = name(opts.commonName ?? `spngd development CA ${randomBytes(4).toString('hex')}`);
  const keyId = keyIdentifier(key.spki);
  const der = certificate({
    subject,
    issuer: subject,
    spki: key.spki,
    days: opts.days ?? 3650,
    signer: key.privateKey,
    extensions: [
      extension(OID.basicConstraints, true, seq(bool(true), integer(Buffer.from([0])))),
      // digitalSignature, keyCertSign, cRLSign: bits 0, 5, 6 → 1000 0110, one unused bit.
      extension(OID.keyUsage, true, bits(Buffer.from([0x86]), 1)),
      extension(OID.subjectKeyIdentifier, false, octets(keyId)),
    ],
  });
  return { cert: pem('CERTIFICATE', der), key: key.pem, subjectDer: subject, keyId, privateKey: key.privateKey };
}

/** A CA from its PEM certificate and key (e.g. one `spngd certs` made before). */
export function loadCertificateAuthority(certPem: string, keyPem: string): CertificateAuthority {
  const x = new X509Certificate(certPem);
  if (!x.ca) throw new Error('the certificate is not a CA certificate');
  const privateKey = createPrivateKey(keyPem);
  if (!x.checkPrivateKey(privateKey)) throw new Error('the CA key does not belong to the CA certificate');
  signatureAlgorithm(privateKey);
  return { cert: certPem, key: keyPem, subjectDer: subjectDer(x.raw), keyId: keyIdentifier(x.publicKey.export({ type: 'spki', format: 'der' })), privateKey };
}

/**
 * A certificate for `names` (DNS names and/or IP addresses; the first is its common name), for
 * TLS server and client authentication, issued by `ca`.
 */
export function issueCertificate(ca: CertificateAuthority, names: string[], opts: { days?: number; identity?: string } = {}): IssuedCertificate {
  if (names.length === 0) throw new Error('a certificate needs at least one host name');
  for (const n of names) checkHostName(n);
  const key = newKey();
  const san = seq(
    ...names.map((n) => (isIP(n) ? implicit(7, ipBytes(n)) : implicit(2, Buffer.from(n.toLowerCase(), 'latin1')))),
    // The actor's role and id (spngd://ROLE/ID) as a URI general name.
    ...(opts.identity ? [implicit(6, Buffer.from(opts.identity, 'latin1'))] : []),
  );
  const der = certificate({
    subject: name(names[0]),
    issuer: ca.subjectDer,
    spki: key.spki,
    days: opts.days ?? 825,
    signer: ca.privateKey,
    extensions: [
      extension(OID.basicConstraints, true, seq()),
      // digitalSignature: bit 0 → 1000 0000, seven unused bits (ECDSA keys sign the handshake).
      extension(OID.keyUsage, true, bits(Buffer.from([0x80]), 7)),
      extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
      extension(OID.subjectAltName, false, san),
      extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(key.spki))),
      extension(OID.authorityKeyIdentifier, false, seq(implicit(0, ca.keyId))),
    ],
  });
  return { cert: pem('CERTIFICATE', der), key: key.pem };
}

/** A random bearer token (256 bits, base64url). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}
