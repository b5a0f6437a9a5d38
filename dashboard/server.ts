// `gramfuse dashboard`: a read-only web view on loopback. It reads the coordinator with its own identity (it sees
// what that identity may see: an observer sees every job's status and report, never a merged model) and the
// ledgers the auditor holds. Plain node:http: three pages, two assets and one server-sent-events stream need no
// framework, and every response goes out through `send` with the same security headers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { type ConnectOptions, connectFederation } from '../client/index.js';
import type { federation } from '../proto/index.js';
import { ErrorCode, GramfuseError, toGramfuseError } from '../shared/index.js';
import { NatsEventBus, type NatsTarget } from '../shared/nats/index.js';
import { APP_JS, STYLE_CSS } from './assets.js';
import type { Html } from './html.js';
import { readLedgers } from './ledgers.js';
import { auditPage, errorPage, type Frame, type JobReport, jobPage, jobsPage, layout } from './pages/index.js';

export interface DashboardOptions {
  readonly coordinator: ConnectOptions;
  /** Audit ledgers (audit.jsonl) the auditor holds: read and verified on every view. */
  readonly ledgers?: readonly string[];
  /** NATS: live updates from the events bus, and the GRAMFUSE_AUDIT mirror on the audit page. */
  readonly nats?: NatsTarget;
  /** host:port to listen on. @default 127.0.0.1:8080 */
  readonly listen?: string;
  /** Without NATS, how often the coordinator's job list is polled while a page is open. @default 2000 */
  readonly pollMs?: number;
  readonly log?: (line: string) => void;
}

export interface Dashboard {
  readonly url: string;
  close(): Promise<void>;
}

/** No script but /app.js, no style but /style.css, nothing from another origin, never framed. */
export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MAX_EVENT_CLIENTS = 32;

function hostPort(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(':');
  const host = at < 0 ? '' : listen.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = Number(listen.slice(at + 1));
  if (host === '' || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new GramfuseError(ErrorCode.InvalidArgument, `--listen ${listen} is not host:port (e.g. 127.0.0.1:8080)`, {
      facts: { listen },
    });
  return { host, port };
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  const { host, port } = hostPort(options.listen ?? '127.0.0.1:8080');
  const log = options.log ?? (() => undefined);
  const client = connectFederation(options.coordinator);
  const ledgers = options.ledgers ?? [];
  const bus = options.nats === undefined ? undefined : await NatsEventBus.connect(options.nats, 'gramfuse dashboard');
  const frame: Frame = {
    coordinator: options.coordinator.address,
    identity: client.identity,
    live: bus === undefined ? 'polling' : 'nats',
  };
  // report.json once per job and result: each download is a `result.fetched` record in the coordinator's ledger.
  const reports = new Map<string, JobReport>();
  const clients = new Set<ServerResponse>();

  const broadcast = (job: string, type: string): void => {
    const message = `event: job\ndata: ${JSON.stringify({ job, type })}\n\n`;
    for (const c of clients) c.write(message);
  };
  // A record on the bus that is not a job event is skipped, and said: in the log and to the open pages (`skipped`).
  const skipped = (problem: GramfuseError): void => {
    log(`skipped a record: ${problem.toLine()}`);
    const message = `event: skipped\ndata: ${JSON.stringify({ code: problem.code, message: problem.message })}\n\n`;
    for (const c of clients) c.write(message);
  };
  const unsubscribe =
    bus === undefined ? undefined : await bus.subscribe(undefined, (e) => broadcast(e.job, e.type), { onSkipped: skipped });
  // Without the bus: the job list, polled while someone looks, and each change announced as an event would be.
  const seen = new Map<string, string>();
  let primed = false;
  const poll =
    bus !== undefined
      ? undefined
      : setInterval(() => {
          if (clients.size === 0) return;
          client.listJobs().then(
            (jobs) => {
              for (const j of jobs) {
                const mark = [j.state, j.completed.join(','), j.resultSha256, ...j.solveGroups.map((g) => `${g.group}=${g.state}`)].join(
                  '|',
                );
                if (primed && seen.get(j.jobId) !== mark) broadcast(j.jobId, 'state');
                seen.set(j.jobId, mark);
              }
              primed = true;
            },
            () => undefined,
          );
        }, options.pollMs ?? 2000);
  poll?.unref();
  const heartbeat = setInterval(() => {
    for (const c of clients) c.write(': alive\n\n');
  }, 15_000);
  heartbeat.unref();

  const allowedHosts = (actualPort: number): Set<string> =>
    new Set([
      `127.0.0.1:${actualPort}`,
      `localhost:${actualPort}`,
      `[::1]:${actualPort}`,
      `${host.includes(':') ? `[${host}]` : host}:${actualPort}`,
    ]);
  let hosts = new Set<string>();

  const send = (res: ServerResponse, status: number, type: string, body: string | Html): void => {
    const text = String(body);
    res.writeHead(status, {
      'content-type': type,
      'content-length': Buffer.byteLength(text),
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
      'cross-origin-resource-policy': 'same-origin',
    });
    res.end(text);
  };
  const page = (res: ServerResponse, status: number, title: string, kind: 'jobs' | 'job' | 'audit', body: Html, job?: string): void =>
    send(res, status, 'text/html; charset=utf-8', layout(frame, title, kind, body, job));
  const failed = (res: ServerResponse, error: unknown, kind: 'jobs' | 'job' | 'audit'): void => {
    const coded = toGramfuseError(error);
    const status = coded.code === ErrorCode.JobNotFound ? 404 : coded.code === ErrorCode.NotAuthorized ? 403 : 502;
    page(res, status, 'Error', kind, errorPage(`${coded.code}: ${coded.message}`));
  };

  const jobReport = async (status: federation.JobStatus): Promise<{ report?: JobReport; note: string }> => {
    if (status.state !== 'done') return { note: 'The per-layer diagnostics come with the result (report.json), once the job is done.' };
    const key = `${status.jobId}\u0000${status.resultSha256}`;
    let report = reports.get(key);
    if (report === undefined) {
      try {
        report = JSON.parse((await client.download(status.jobId, 'report.json')).toString('utf8')) as JobReport;
      } catch (error) {
        const coded = toGramfuseError(error);
        return { note: `report.json is not readable as ${client.identity}: ${coded.code}: ${coded.message}` };
      }
      reports.set(key, report);
    }
    return { report, note: '' };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // A page on loopback is still reachable from a browser tab through DNS rebinding: only our own host names.
    if (!hosts.has(req.headers.host ?? '')) return send(res, 403, 'text/plain; charset=utf-8', 'forbidden: unknown Host header\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', 'this dashboard is read-only: GET only\n');
    }
    const path = new URL(req.url ?? '/', 'http://dashboard').pathname;
    if (path === '/app.js') return send(res, 200, 'text/javascript; charset=utf-8', APP_JS);
    if (path === '/style.css') return send(res, 200, 'text/css; charset=utf-8', STYLE_CSS);
    if (path === '/events') {
      if (clients.size >= MAX_EVENT_CLIENTS) return send(res, 503, 'text/plain; charset=utf-8', 'too many open pages\n');
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        'content-security-policy': CONTENT_SECURITY_POLICY,
      });
      res.write(': gramfuse dashboard events\n\n');
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    if (path === '/') {
      try {
        return page(res, 200, 'Jobs', 'jobs', jobsPage(await client.listJobs()));
      } catch (error) {
        return failed(res, error, 'jobs');
      }
    }
    if (path === '/audit') {
      const [set, jobs] = await Promise.all([readLedgers(ledgers, options.nats, skipped), client.listJobs().catch(() => [])]);
      return page(res, 200, 'Audit', 'audit', auditPage(set, jobs));
    }
    const match = /^\/jobs\/([^/]+)$/.exec(path);
    if (match !== null) {
      let id: string;
      try {
        id = decodeURIComponent(match[1]!);
      } catch {
        return page(res, 400, 'Error', 'job', errorPage('not a job id'));
      }
      try {
        const status = await client.getJob(id);
        const [{ report, note }, set] = await Promise.all([jobReport(status), readLedgers(ledgers, options.nats, skipped)]);
        return page(res, 200, `Job ${id}`, 'job', jobPage(status, report, note, set), id);
      } catch (error) {
        return failed(res, error, 'job');
      }
    }
    return page(res, 404, 'Not found', 'jobs', errorPage(`nothing at ${path}`));
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      log(`dashboard: ${req.url ?? ''}: ${toGramfuseError(error).message}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new GramfuseError(
          error.code === 'EADDRINUSE' ? ErrorCode.Unavailable : ErrorCode.InvalidArgument,
          `cannot listen on ${options.listen ?? '127.0.0.1:8080'}: ${error.message}${error.code === 'EADDRINUSE' ? '; choose another port with --listen' : ''}`,
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  hosts = allowedHosts(actual);
  if (!LOOPBACK.has(host))
    log(`dashboard: listening on ${host}, not loopback: anyone who reaches it reads what ${client.identity} may read (it has no login)`);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${actual}/`;
  return {
    url,
    close: async () => {
      clearInterval(heartbeat);
      if (poll !== undefined) clearInterval(poll);
      for (const c of clients) c.end();
      clients.clear();
      await unsubscribe?.();
      await bus?.close();
      client.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
