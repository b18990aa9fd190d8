/**
 * A development certificate authority: a CA certificate and, for each host, a certificate for both
 * TLS server and client use (every spngd actor is both), with the host's names in subjectAltName
 * and, when given, the actor's role and id as the URI spngd://ROLE/ID (what the PS accepts from it;
 * see src/actors/common/identity.ts). Keys are ECDSA P-256; a CA loaded from files may also be
 * ECDSA P-384 or RSA.
 *
 * The certificates are built by @peculiar/x509 (ASN.1 from @peculiar/asn1-*) and signed with
 * Node's WebCrypto: no hand-written DER. Node's `X509Certificate` parses the result back, and
 * test/security-certs.test.ts also checks them with `openssl verify` when openssl is installed.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, webcrypto, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
// @peculiar/x509's dependency injection (tsyringe) needs the Reflect metadata API: loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

const subtle = webcrypto.subtle as SubtleCrypto;
const crypto = webcrypto as unknown as Crypto;

export { checkHostName, ipBytes } from './names.js';
import { checkHostName } from './names.js';

export interface CertificateAuthority {
  /** PEM. */
  cert: string;
  key: string;
  /** The parsed CA certificate (issuer name and key identifier of what it issues). */
  x509: x509.X509Certificate;
  /** WebCrypto signing key and the algorithm it signs with. */
  signingKey: CryptoKey;
  algorithm: EcdsaParams | Algorithm;
}

export interface IssuedCertificate {
  cert: string;
  key: string;
}

const DAY = 86_400_000;
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** A positive 16-byte serial number, as hex. */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] &= 0x7f;
  b[0] |= 0x01;
  return b.toString('hex');
}

/** Valid from a few minutes ago (clocks of the hosts may differ a little) for `days`. */
function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - 5 * 60_000), notAfter: new Date(now + days * DAY) };
}

/** "O=spngd, CN=..." with the common name escaped for the DN string syntax (RFC 4514). */
function dn(cn: string): string {
  return `O=spngd, CN=${cn.replace(/([,+"\\<>;=#])/g, '\\$1')}`;
}

function pemKey(k: KeyObject): string {
  return k.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** A new ECDSA P-256 key pair: PEM (PKCS#8) and WebCrypto keys. */
async function newKey(): Promise<{ pem: string; keys: CryptoKeyPair }> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pem = pemKey(privateKey);
  return { pem, keys: await webCryptoKeys(privateKey) };
}

/** The WebCrypto algorithm that signs with `key` (SHA-256; P-384 with SHA-384). */
function algorithmOf(key: KeyObject): { import: EcKeyImportParams | RsaHashedImportParams; sign: EcdsaParams | Algorithm } {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'secp384r1' ? 'P-384' : curve === 'prime256v1' ? 'P-256' : undefined;
    if (!namedCurve) throw new Error(`EC keys on curve ${curve} are not supported (use P-256 or P-384)`);
    const hash = namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256';
    return { import: { name: 'ECDSA', namedCurve }, sign: { name: 'ECDSA', hash } as EcdsaParams };
  }
  if (key.asymmetricKeyType === 'rsa') return { import: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } };
  throw new Error(`CA keys of type ${key.asymmetricKeyType} are not supported (use EC or RSA)`);
}

async function webCryptoKeys(privateKey: KeyObject): Promise<CryptoKeyPair> {
  const alg = algorithmOf(privateKey).import;
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = { ...jwk };
  for (const k of ['d', 'p', 'q', 'dp', 'dq', 'qi']) delete (pub as Record<string, unknown>)[k];
  return {
    privateKey: await subtle.importKey('jwk', jwk as JsonWebKey, alg, true, ['sign']),
    publicKey: await subtle.importKey('jwk', pub as JsonWebKey, alg, true, ['verify']),
  };
}

/** A new self-signed CA (keyCertSign, cRLSign; path length 0: it issues only end-entity certificates). */
export async function createCertificateAuthority(opts: { commonName?: string; days?: number } = {}): Promise<CertificateAuthority> {
  const key = await newKey();
  const algorithm = { ...EC_P256, hash: 'SHA-256' };
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serialNumber(),
      name: dn(opts.commonName ?? `spngd development CA ${randomBytes(4).toString('hex')}`),
      ...validity(opts.days ?? 3650),
      signingAlgorithm: algorithm,
      keys: key.keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(key.keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return {
    cert: `${cert.toString('pem')}\n`,
    key: key.pem,
    x509: cert,
    signingKey: key.keys.privateKey,
    algorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
  };
}

/** A CA from its PEM certificate and key (e.g. one `spngd certs` made before). */
export async function loadCertificateAuthority(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const node = new NodeX509(certPem);
  if (!node.ca) throw new Error('the certificate is not a CA certificate');
  const privateKey = createPrivateKey(keyPem);
  if (!node.checkPrivateKey(privateKey)) throw new Error('the CA key does not belong to the CA certificate');
  const alg = algorithmOf(privateKey);
  const keys = await webCryptoKeys(privateKey);
  return { cert: certPem, key: keyPem, x509: new x509.X509Certificate(node.raw), signingKey: keys.privateKey, algorithm: alg.sign };
}

/**
 * A certificate for `names` (DNS names and/or IP addresses; the first is its common name), for
 * TLS server and client authentication, issued by `ca`; `identity` (spngd://ROLE/ID) is added to
 * its subjectAltName as a URI.
 */
export async function issueCertificate(ca: CertificateAuthority, names: string[], opts: { days?: number; identity?: string } = {}): Promise<IssuedCertificate> {
  if (names.length === 0) throw new Error('a certificate needs at least one host name');
  for (const n of names) checkHostName(n);
  const key = await newKey();
  const altNames: x509.JsonGeneralNames = names.map((n) => (isIP(n) ? { type: 'ip', value: n } : { type: 'dns', value: n.toLowerCase() }));
  if (opts.identity) altNames.push({ type: 'url', value: opts.identity });
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serialNumber(),
      subject: dn(names[0]),
      issuer: ca.x509.subjectName,
      ...validity(opts.days ?? 825),
      signingAlgorithm: ca.algorithm,
      publicKey: key.keys.publicKey,
      signingKey: ca.signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        // digitalSignature: ECDSA keys sign the handshake.
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        new x509.SubjectAlternativeNameExtension(altNames, false),
        await x509.SubjectKeyIdentifierExtension.create(key.keys.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(ca.x509, false, crypto),
      ],
    },
    crypto,
  );
  return { cert: `${cert.toString('pem')}\n`, key: key.pem };
}

/** A random bearer token (256 bits, base64url). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}
