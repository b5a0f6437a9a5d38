import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { nkeys } from '@nats-io/transport-node';

import type { NatsEndpoint } from '../../shared/nats/index.js';
import { type CertificateBundle, createCertificateAuthority, issueCertificate } from '../../shared/security/index.js';
import { NatsServer } from './nats-server.js';

/** The production configuration the tests run: the very file operators deploy. */
export const DEPLOY_NATS_CONF = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'nats-server.conf');

export const NATS_ROLES = ['coordinator', 'solver', 'agent-mirror', 'observer'] as const;
export type NatsRole = (typeof NATS_ROLES)[number];

/** One role's way in: its NKEY seed file (0600) and the endpoint / CLI flags that use it. */
export interface NatsRoleAccess {
  readonly seedFile: string;
  readonly publicKey: string;
  readonly endpoint: NatsEndpoint;
  /** `--nats URL --nats-tls-ca CA --nats-creds SEED` for a gramfuse command. */
  readonly args: readonly string[];
}

/**
 * nats-server with deploy/nats-server.conf unchanged: TLS with a federation CA made by gramfuse's own certificate code
 * (server certificate for 127.0.0.1), one NKEY user per role, on a free port with a temporary store.
 */
export class SecureNats {
  private constructor(
    readonly server: NatsServer,
    readonly dir: string,
    readonly caFile: string,
    /** The federation CA (key included): tests issue client certificates with it. */
    readonly ca: CertificateBundle,
    readonly roles: Readonly<Record<NatsRole, NatsRoleAccess>>,
  ) {}

  get url(): string {
    return this.server.url;
  }

  /**
   * `variant`: run a changed copy of the production file instead (e.g. `verify: true`, an extra user); the default is
   * the file itself, unchanged.
   */
  static async start(variant?: (conf: string) => string): Promise<SecureNats> {
    const dir = await mkdtemp(join(tmpdir(), 'gramfuse-nats-secure-'));
    const ca = await createCertificateAuthority('gramfuse test federation CA');
    const cert = await issueCertificate(ca, 'nats', { hosts: ['127.0.0.1', 'localhost'] });
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, ca.certPem);
    await writeFile(join(dir, 'nats.pem'), cert.certPem);
    await writeFile(join(dir, 'nats-key.pem'), cert.keyPem, { mode: 0o600 });
    const env: Record<string, string> = {
      GRAMFUSE_NATS_TLS_CERT: join(dir, 'nats.pem'),
      GRAMFUSE_NATS_TLS_KEY: join(dir, 'nats-key.pem'),
      GRAMFUSE_NATS_TLS_CA: caFile,
    };
    const users: Partial<Record<NatsRole, { seedFile: string; publicKey: string }>> = {};
    for (const role of NATS_ROLES) {
      const user = nkeys.createUser();
      const seedFile = join(dir, `${role}.nk`);
      await writeFile(seedFile, `${new TextDecoder().decode(user.getSeed())}\n`, { mode: 0o600 });
      await chmod(seedFile, 0o600);
      users[role] = { seedFile, publicKey: user.getPublicKey() };
      env[`GRAMFUSE_NATS_${role.toUpperCase().replaceAll('-', '_')}_NKEY`] = user.getPublicKey();
    }
    let file = DEPLOY_NATS_CONF;
    if (variant !== undefined) {
      file = join(dir, 'nats-server.conf');
      await writeFile(file, variant(await readFile(DEPLOY_NATS_CONF, 'utf8')));
    }
    const server = await NatsServer.start({ file, env });
    const roles = Object.fromEntries(
      NATS_ROLES.map((role) => {
        const { seedFile, publicKey } = users[role]!;
        const access: NatsRoleAccess = {
          seedFile,
          publicKey,
          endpoint: { url: server.url, tlsCa: caFile, creds: seedFile },
          args: ['--nats', server.url, '--nats-tls-ca', caFile, '--nats-creds', seedFile],
        };
        return [role, access];
      }),
    ) as Record<NatsRole, NatsRoleAccess>;
    return new SecureNats(server, dir, caFile, ca, roles);
  }

  async stop(): Promise<void> {
    await this.server.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
