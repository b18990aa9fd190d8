/**
 * How actors authenticate each other: every gRPC server and client of spngd gets its credentials
 * from one `ActorCredentials`, built once at startup from the security settings.
 *
 * - Mutual TLS (tlsCa + tlsCert + tlsKey): servers present their certificate and require a client
 *   certificate issued by the cluster's CA; clients check the server's certificate against the
 *   same CA and the host name they dialled. A process without such a certificate cannot open a
 *   connection at all.
 * - Bearer token (tokenFile): servers answer every call except grpc.health.v1 with UNAUTHENTICATED
 *   unless it carries `authorization: Bearer <token>`; clients add that header to each call. It
 *   is sent as per-call metadata from a client interceptor, since grpc-js refuses call
 *   credentials on an insecure channel (so the token also works without TLS, e.g. on loopback).
 *
 * Without settings everything is insecure (loopback development), as before.
 */
import { createHash, createPrivateKey, timingSafeEqual, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import {
  credentials,
  InterceptingCall,
  Metadata,
  ServerCredentials,
  ServerInterceptingCall,
  status,
  type ChannelCredentials,
  type ClientOptions,
  type Interceptor,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import { channelOptions, type TransportOptions } from '../../transport/channel-options.js';
import { HEALTH_SERVICE_NAME } from '../../transport/health-reflection.js';

/** File paths, from the `security` config section or the --tls-ca/--tls-cert/--tls-key/--token-file flags. */
export interface SecuritySettings {
  /** PEM CA certificate(s): peers must present a certificate issued by it. */
  tlsCa?: string | undefined;
  /** PEM certificate of this process (its chain may follow), issued by the CA. */
  tlsCert?: string | undefined;
  /** PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1) of tlsCert. */
  tlsKey?: string | undefined;
  /** A file holding the cluster's bearer token (surrounding whitespace is ignored). */
  tokenFile?: string | undefined;
}

/** A security file that is missing, unreadable or invalid: one line naming the file. */
export class SecurityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecurityError';
  }
}

export interface ActorCredentials {
  /** Mutual TLS is on. */
  readonly tls: boolean;
  /** A bearer token is required by servers and sent by clients. */
  readonly token: boolean;
  /** For Server.bindAsync. */
  serverCredentials(): ServerCredentials;
  /** For new XxxServiceClient(address, channelCredentials(), clientOptions(transport)). */
  channelCredentials(): ChannelCredentials;
  /** channelOptions(transport) plus the interceptor that adds the token to every call. */
  clientOptions(transport?: TransportOptions): ClientOptions;
  /** Server interceptors (the token check), for new Server({ interceptors }). */
  serverInterceptors(): ServerInterceptor[];
  /** One line for the log, e.g. "mutual TLS (CA CN=spngd dev CA), bearer token". */
  describe(): string;
}

/** The header a token travels in. */
export const AUTHORIZATION = 'authorization';

const HEALTH_PREFIX = `/${HEALTH_SERVICE_NAME}/`;

function readFile(what: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new SecurityError(`${what} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function parseCertificates(what: string, file: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new SecurityError(`${what} ${file}: no PEM certificate in it (expected "-----BEGIN CERTIFICATE-----")`);
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new SecurityError(`${what} ${file}: not a valid certificate (${(err as Error).message})`);
    }
  });
}

function checkValidity(what: string, file: string, c: X509Certificate, now = Date.now()): void {
  if (Date.parse(c.validFrom) > now) throw new SecurityError(`${what} ${file}: not valid before ${c.validFrom}`);
  if (Date.parse(c.validTo) < now) throw new SecurityError(`${what} ${file}: expired on ${c.validTo}`);
}

const subjectLine = (c: X509Certificate) => c.subject.replace(/\n/g, ', ');

/** Reads and checks the three TLS files; throws SecurityError with one line on any problem. */
function loadTls(s: Required<Pick<SecuritySettings, 'tlsCa' | 'tlsCert' | 'tlsKey'>>): { ca: Buffer; cert: Buffer; key: Buffer; caSubject: string } {
  const ca = readFile('TLS CA', s.tlsCa);
  const cert = readFile('TLS certificate', s.tlsCert);
  const key = readFile('TLS key', s.tlsKey);
  const cas = parseCertificates('TLS CA', s.tlsCa, ca);
  for (const c of cas) checkValidity('TLS CA', s.tlsCa, c);
  if (!cas.some((c) => c.ca)) throw new SecurityError(`TLS CA ${s.tlsCa}: ${subjectLine(cas[0])} is not a CA certificate (basicConstraints CA:FALSE)`);
  const chain = parseCertificates('TLS certificate', s.tlsCert, cert);
  const leaf = chain[0];
  checkValidity('TLS certificate', s.tlsCert, leaf);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    const m = (err as Error).message;
    const why = /passphrase/i.test(m)
      ? 'the key is encrypted; spngd needs an unencrypted key (protect it with file permissions)'
      : `not a valid PEM private key (${m})`;
    throw new SecurityError(`TLS key ${s.tlsKey}: ${why}`);
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new SecurityError(`TLS key ${s.tlsKey} does not belong to the certificate ${s.tlsCert} (${subjectLine(leaf)})`);
  // A certificate issued directly by the CA is checked here; with intermediates in the file,
  // the TLS handshake checks the chain.
  if (chain.length === 1 && !cas.some((c) => leaf.checkIssued(c) && leaf.verify(c.publicKey))) {
    throw new SecurityError(
      `TLS certificate ${s.tlsCert} (${subjectLine(leaf)}, issuer ${leaf.issuer.replace(/\n/g, ', ')}) was not issued by the CA in ${s.tlsCa}`,
    );
  }
  return { ca, cert, key, caSubject: subjectLine(cas[0]) };
}

/** Reads the token file: one line of visible ASCII without spaces (it goes in an HTTP/2 header). */
export function readToken(file: string): string {
  const token = readFile('token file', file).toString('utf8').trim();
  if (token.length === 0) throw new SecurityError(`token file ${file}: it is empty`);
  if (!/^[\x21-\x7e]+$/.test(token))
    throw new SecurityError(`token file ${file}: the token must be one word of visible ASCII characters (no spaces, no line breaks)`);
  return token;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** The token check of every call except health checks. */
function tokenInterceptor(token: string): ServerInterceptor {
  const want = digest(`Bearer ${token}`);
  const valid = (md: Metadata): boolean => {
    const values = md.get(AUTHORIZATION);
    if (values.length !== 1 || typeof values[0] !== 'string') return false;
    const v = values[0].replace(/^bearer(?=\s)/i, 'Bearer').trim();
    // Comparing digests keeps the comparison constant-time whatever the length sent.
    return timingSafeEqual(digest(v), want);
  };
  return (method, call) => {
    if (method.path.startsWith(HEALTH_PREFIX)) return new ServerInterceptingCall(call);
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (md, nextMd) => {
            if (valid(md)) nextMd(md);
            // The handler never starts: the call ends here.
            else
              call.sendStatus({
                code: status.UNAUTHENTICATED,
                details: `${method.path}: a valid bearer token is required (metadata "authorization: Bearer <token>")`,
                metadata: new Metadata(),
              });
          },
        }),
    });
  };
}

/** Adds the token to every call of a client. */
function tokenSender(token: string): Interceptor {
  const header = `Bearer ${token}`;
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set(AUTHORIZATION, header);
        next(metadata, listener);
      },
    });
}

function build(tls: ReturnType<typeof loadTls> | undefined, token: string | undefined): ActorCredentials {
  // One ChannelCredentials for all of the process's clients, so that grpc-js can share connections.
  const channel = tls ? credentials.createSsl(tls.ca, tls.key, tls.cert) : credentials.createInsecure();
  const interceptors = token ? [tokenSender(token)] : [];
  const serverInterceptors = token ? [tokenInterceptor(token)] : [];
  return {
    tls: tls !== undefined,
    token: token !== undefined,
    serverCredentials: () =>
      tls ? ServerCredentials.createSsl(tls.ca, [{ cert_chain: tls.cert, private_key: tls.key }], true) : ServerCredentials.createInsecure(),
    channelCredentials: () => channel,
    clientOptions: (transport = {}) => ({ ...channelOptions(transport), ...(interceptors.length ? { interceptors } : {}) }),
    serverInterceptors: () => serverInterceptors,
    describe: () => [tls ? `mutual TLS (CA ${tls.caSubject})` : 'no TLS', token ? 'bearer token' : 'no token'].join(', '),
  };
}

/** Plaintext, no token: loopback development (the default). */
export const INSECURE: ActorCredentials = build(undefined, undefined);

/** Which of the three TLS settings are missing when some but not all are given (empty: fine). */
export function missingTlsSettings(s: SecuritySettings): string[] {
  const given = [s.tlsCa, s.tlsCert, s.tlsKey].filter((x) => x !== undefined && x !== '').length;
  if (given === 0 || given === 3) return [];
  return (['tlsCa', 'tlsCert', 'tlsKey'] as const).filter((k) => !s[k]);
}

const FLAG: Record<string, string> = { tlsCa: '--tls-ca', tlsCert: '--tls-cert', tlsKey: '--tls-key' };

/**
 * Reads the files once and builds the process's credentials. Throws SecurityError (one line) when
 * a file is unreadable or invalid, the key does not match the certificate, or only some of the
 * three TLS settings are given.
 */
export function loadCredentials(s: SecuritySettings = {}): ActorCredentials {
  const missing = missingTlsSettings(s);
  if (missing.length > 0) {
    throw new SecurityError(
      `mutual TLS needs --tls-ca, --tls-cert and --tls-key (security.tlsCa/tlsCert/tlsKey) together; missing ${missing.map((k) => FLAG[k]).join(', ')}`,
    );
  }
  const tls = s.tlsCa && s.tlsCert && s.tlsKey ? loadTls({ tlsCa: s.tlsCa, tlsCert: s.tlsCert, tlsKey: s.tlsKey }) : undefined;
  const token = s.tokenFile ? readToken(s.tokenFile) : undefined;
  if (!tls && !token) return INSECURE;
  return build(tls, token);
}

/** localhost, *.localhost, 127.0.0.0/8, ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h);
  return false;
}

/** The warning to log when an actor serves HOST:PORT beyond loopback without TLS (else undefined). */
export function exposureWarning(listen: string, creds: ActorCredentials): string | undefined {
  if (creds.tls) return undefined;
  const m = /^(\[[^\]]+\]|[^:]+):\d+$/.exec(listen.trim());
  const host = m ? m[1] : listen;
  if (isLoopbackHost(host)) return undefined;
  return (
    `listening on ${listen} without TLS: any host that reaches this address can join the job, push gradients and statistics and read the parameters` +
    `${creds.token ? ' (a bearer token is required, but it travels in clear text)' : ''}. ` +
    'Use --tls-ca/--tls-cert/--tls-key (spngd certs makes a development CA), or listen on loopback.'
  );
}
