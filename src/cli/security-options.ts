/**
 * --tls-ca/--tls-cert/--tls-key/--token-file on `spngd ps|worker|owner|train|status`: each maps onto
 * a key of the `security` config section (flags win over the file, key by key).
 */
import type { Command } from 'commander';
import { exposureWarning, loadCredentials, type ActorCredentials, type SecuritySettings } from '../actors/common/credentials.js';
import type { Logger } from '../util/log.js';

export interface SecurityFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tokenFile?: string;
}

export function addSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--tls-ca <file>', 'mutual TLS: PEM CA certificate; peers must present a certificate it issued')
    .option('--tls-cert <file>', 'mutual TLS: PEM certificate of this process (issued by the CA, for its host name)')
    .option('--tls-key <file>', 'mutual TLS: its unencrypted PEM private key')
    .option('--token-file <file>', "file holding the cluster's bearer token (required on every call but health checks)");
}

/** The flags given, as settings (absent flags are left out, so that they do not hide config keys). */
export function securityFromFlags(f: SecurityFlags): SecuritySettings {
  const out: SecuritySettings = {};
  if (f.tlsCa !== undefined) out.tlsCa = f.tlsCa;
  if (f.tlsCert !== undefined) out.tlsCert = f.tlsCert;
  if (f.tlsKey !== undefined) out.tlsKey = f.tlsKey;
  if (f.tokenFile !== undefined) out.tokenFile = f.tokenFile;
  return out;
}

/**
 * Loads the process's credentials (reads the files once; a bad file is one SecurityError line),
 * logs what is in force, and warns when `listen` is beyond loopback without TLS.
 */
export function actorCredentials(settings: SecuritySettings, logger: Logger, listen?: string): ActorCredentials {
  const creds = loadCredentials(settings);
  if (creds.tls || creds.token) logger.info(`security: ${creds.describe()}`);
  const warning = listen === undefined ? undefined : exposureWarning(listen, creds);
  if (warning) logger.warn(warning);
  return creds;
}
