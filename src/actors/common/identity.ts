/**
 * Who is calling: the identity a call proves, as opposed to the ids its messages claim.
 *
 * - The session secret: the PS hands every member one at Join (JoinResponse.session_secret), and
 *   the member sends it with each later call to the PS in the metadata key `spngd-session`.
 * - With mutual TLS, the peer certificate: a certificate made by `spngd certs` for an actor names
 *   its role and id in a subjectAltName URI `spngd://ROLE/ID` (ROLE: worker, owner; ID may be `*`
 *   for any id of the role). A certificate without such a URI (a host certificate) names no
 *   identity; the session secret alone then decides.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { Role } from '../../gen/spngd/v1/membership.js';

/** The metadata key that carries a member's session secret. */
export const SESSION_METADATA = 'spngd-session';

/** The URI scheme of the identity in a certificate's subjectAltName. */
export const IDENTITY_SCHEME = 'spngd';

/** Role names in identity URIs. */
export const ROLE_NAMES: Record<string, Role> = {
  worker: Role.ROLE_WORKER,
  owner: Role.ROLE_FACTOR_OWNER,
  ps: Role.ROLE_PARAMETER_SERVER,
  'ps-shard': Role.ROLE_PS_SHARD,
};

export function roleName(role: Role): string {
  return Object.entries(ROLE_NAMES).find(([, r]) => r === role)?.[0] ?? `role-${role}`;
}

/** `spngd://owner/owner-1` for (owner, owner-1). */
export function identityUri(role: Role | string, id: string): string {
  const r = typeof role === 'string' ? role : roleName(role);
  return `${IDENTITY_SCHEME}://${r}/${id}`;
}

export interface CertIdentity {
  role: Role;
  /** The member id, or '*' for any id of the role. */
  id: string;
  uri: string;
}

const URI = /^spngd:\/\/(worker|owner|ps)\/([A-Za-z0-9._*-]{1,128})$/;

/** Parses `spngd://ROLE/ID` (undefined when it is not one). */
export function parseIdentityUri(uri: string): CertIdentity | undefined {
  const m = URI.exec(uri.trim());
  if (!m) return undefined;
  return { role: ROLE_NAMES[m[1]], id: m[2], uri: uri.trim() };
}

/** The spngd identities in a subjectAltName string as Node reports it ("DNS:a, URI:spngd://worker/w-1"). */
export function identitiesInAltNames(subjectaltname: string | undefined): CertIdentity[] {
  if (!subjectaltname) return [];
  return subjectaltname
    .split(/,\s*/)
    .filter((n) => n.startsWith('URI:'))
    .map((n) => parseIdentityUri(n.slice(4)))
    .filter((x): x is CertIdentity => x !== undefined);
}

/** A new random session secret (256 bits, base64url). */
export function newSessionSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Metadata carrying `secret` (plus `base`'s entries and options). */
export function withSession(secret: string | undefined, base?: Metadata): Metadata {
  const md = base ?? new Metadata();
  if (secret) md.set(SESSION_METADATA, secret);
  return md;
}

/** Constant-time comparison of two secrets. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** What a server call offers about its caller. */
interface CallLike {
  metadata: Metadata;
  getPeer(): string;
  getAuthContext?(): { transportSecurityType?: string; sslPeerCertificate?: { subjectaltname?: string; subject?: { CN?: string | string[] } } } | null;
}

export interface CallIdentity {
  /** host:port of the peer. */
  peer: string;
  /** The session secret sent, if any. */
  session: string | undefined;
  /** The identity the peer certificate names (mutual TLS), if any. */
  cert: CertIdentity | undefined;
  /** The certificate's common name (for logs), if there is a certificate. */
  certName: string | undefined;
}

export function callIdentity(call: CallLike): CallIdentity {
  const values = call.metadata.get(SESSION_METADATA);
  const session = values.length === 1 && typeof values[0] === 'string' ? values[0] : undefined;
  let cert: CertIdentity | undefined;
  let certName: string | undefined;
  try {
    const peerCert = call.getAuthContext?.()?.sslPeerCertificate;
    if (peerCert) {
      cert = identitiesInAltNames(peerCert.subjectaltname)[0];
      const cn = peerCert.subject?.CN;
      certName = Array.isArray(cn) ? cn[0] : cn;
    }
  } catch {
    /* no auth context (insecure, or a grpc-js without it) */
  }
  let peer = '';
  try {
    peer = call.getPeer();
  } catch {
    peer = 'unknown peer';
  }
  return { peer, session, cert, certName };
}

/** The caller in words for logs: "127.0.0.1:5000 (certificate spngd://worker/worker-1)". */
export function describeCaller(who: CallIdentity, claimed?: string): string {
  const cert = who.cert ? `certificate ${who.cert.uri}` : who.certName ? `certificate CN=${who.certName}` : '';
  const parts = [claimed ? `claiming "${claimed.slice(0, 64)}"` : '', cert, who.session ? 'with a session secret' : 'without a session secret'].filter(Boolean);
  return `${who.peer || 'unknown peer'} (${parts.join(', ')})`;
}
