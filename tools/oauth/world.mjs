// OAuth test world for warden: one Node process running a real OAuth authorization server
// (oidc-provider) and a real MCP resource server (@modelcontextprotocol/sdk) that checks its tokens.
//
// Usage: node world.mjs   (env ACCESS_TOKEN_TTL: access token lifetime in seconds, default 5;
//                          env DEFAULT_SCOPE: scope used when an authorization request has none,
//                          default "mcp")
// Both servers listen on 127.0.0.1 at ephemeral ports. Once both are up, exactly one JSON line is
// printed to stdout:
//   {"issuer":"http://127.0.0.1:A","resource":"http://127.0.0.1:B/mcp"}
// The process runs until stdin closes (when stdin is a pipe) or SIGTERM/SIGINT. Logs go to stderr.
//
// Authorization server (issuer origin):
//   open dynamic registration (public clients, token_endpoint_auth_method "none", native loopback
//   redirect URIs on any port), devInteractions login + consent (any login/password; the login is
//   the account id and `sub`), PKCE S256 required, refresh tokens for every client allowed the
//   refresh_token grant, rotation with reuse detection (presenting a rotated refresh token revokes
//   the grant; token requests are serialized so two concurrent refreshes with one refresh token
//   always trip it), revocation, RFC 8707 resource indicators (default resource = the MCP URL),
//   5-second RS256 JWT access tokens with aud = the MCP URL and scope from "mcp mcp:admin".
//   Test endpoints:
//     GET  /__test/stats        -> {refreshes, refresh_errors: {code: n}, code_exchanges,
//                                   code_errors: {code: n}, reuse_detected, registrations,
//                                   authorizations, grants_revoked}
//     POST /__test/revoke?sub=X -> {"revoked": n}   every grant of account X and its tokens
//     POST /__test/reset-stats  -> {}                zeroes the AS and RS counters
//
// Resource server (resource origin), stateless streamable HTTP at /mcp:
//   Bearer JWT checked with jose against the issuer's JWKS (issuer, audience = MCP URL, typ at+jwt)
//   and required scope "mcp"; a token whose grant was revoked (revoke endpoint or reuse detection)
//   is rejected at once, as an introspecting resource server would. 401s carry
//   WWW-Authenticate: Bearer ..., resource_metadata="<origin>/.well-known/oauth-protected-resource/mcp".
//   Tools: whoami -> the token's sub; echo {text} -> text; admin -> needs scope mcp:admin, else the
//   POST is answered 403 with WWW-Authenticate: Bearer error="insufficient_scope",
//   scope="mcp mcp:admin", resource_metadata="...".
//   GET /__test/rs-stats -> {requests, unauthorized, forbidden, by_sub: {sub: n}} (requests to /mcp).

// Keep stdout for the one JSON line: oidc-provider prints notices with console.info.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.debug = (...args) => console.error(...args);

import { randomBytes } from 'node:crypto';
import { fstatSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors as oidcErrors } from 'oidc-provider';
import * as jose from 'jose';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import {
  getOAuthProtectedResourceMetadataUrl,
  mcpAuthMetadataRouter,
} from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';

const HOST = '127.0.0.1';
const ACCESS_TOKEN_TTL = positiveInt(process.env.ACCESS_TOKEN_TTL, 5);
const DEFAULT_SCOPE = process.env.DEFAULT_SCOPE || 'mcp';
const RESOURCE_SCOPE = 'mcp mcp:admin';
const MCP_PATH = '/mcp';

function positiveInt(text, fallback) {
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`world: bad ACCESS_TOKEN_TTL ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

function log(message) {
  process.stderr.write(`world: ${message}\n`);
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve(server.address().port));
  });
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// Both servers listen first, so each side can be configured with the other's URL.
const asServer = http.createServer();
const rsServer = http.createServer();
const [asPort, rsPort] = await Promise.all([listen(asServer), listen(rsServer)]);
const ISSUER = `http://${HOST}:${asPort}`;
const RESOURCE = `http://${HOST}:${rsPort}${MCP_PATH}`;
const RESOURCE_METADATA_URL = getOAuthProtectedResourceMetadataUrl(new URL(RESOURCE));

// ---------------------------------------------------------------------------------------------
// Counters and grant bookkeeping.

function freshAsStats() {
  return {
    refreshes: 0,
    refresh_errors: {},
    code_exchanges: 0,
    code_errors: {},
    reuse_detected: 0,
    registrations: 0,
    authorizations: 0,
    grants_revoked: 0,
  };
}
function freshRsStats() {
  return { requests: 0, unauthorized: 0, forbidden: 0, by_sub: {} };
}
let asStats = freshAsStats();
let rsStats = freshRsStats();

const grantsBySub = new Map(); // sub -> Set(grantId)
const grantByJti = new Map(); // access token jti -> grantId
const revokedGrants = new Set();

function bump(map, key) {
  map[key] = (map[key] ?? 0) + 1;
}

// ---------------------------------------------------------------------------------------------
// Authorization server.

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'world-rs256' };

function sameResource(a, b) {
  const norm = (u) => String(u).replace(/\/$/, '');
  return norm(a) === norm(b);
}

const provider = new Provider(ISSUER, {
  clients: [],
  responseTypes: ['code'],
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    id_token_signed_response_alg: 'RS256',
  },
  // The resource scopes are also listed here: a client registering with `scope: "mcp mcp:admin"`
  // (rmcp does when it knows the scopes) is rejected unless the AS knows every scope value.
  scopes: ['openid', 'offline_access', 'mcp', 'mcp:admin'],
  claims: { openid: ['sub'] },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  // Without offline_access (dropped unless prompt=consent) no refresh token would be issued.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Refresh tokens outlive the login session (they are otherwise bound to it without offline_access).
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    ClientCredentials: ACCESS_TOKEN_TTL,
    Grant: 24 * 60 * 60,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    RefreshToken: 24 * 60 * 60,
    Session: 24 * 60 * 60,
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (!sameResource(indicator, RESOURCE)) {
          throw new oidcErrors.InvalidTarget(`unknown resource ${indicator}`);
        }
        return {
          scope: RESOURCE_SCOPE,
          audience: RESOURCE,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});

function grantTypeOf(ctx) {
  return ctx.oidc?.params?.grant_type ?? ctx.request?.body?.grant_type;
}

provider.on('grant.success', (ctx) => {
  const gty = grantTypeOf(ctx);
  if (gty === 'refresh_token') asStats.refreshes += 1;
  else if (gty === 'authorization_code') asStats.code_exchanges += 1;
});
provider.on('grant.error', (ctx, err) => {
  const gty = grantTypeOf(ctx);
  const code = err?.error ?? 'server_error';
  if (gty === 'refresh_token') {
    bump(asStats.refresh_errors, code);
    // Reuse detection: the refresh_token grant found the presented token already consumed
    // (rotated), destroyed it, revoked the grant (event grant.revoked) and threw
    // InvalidGrant('refresh token already used'); the client only sees "grant request is invalid",
    // the reason is in error_detail.
    if (err?.error_detail === 'refresh token already used') {
      asStats.reuse_detected += 1;
      log(`refresh token reuse detected, grant revoked (client ${ctx.oidc?.client?.clientId})`);
    }
  } else if (gty === 'authorization_code') {
    bump(asStats.code_errors, code);
  }
});
provider.on('grant.revoked', (_ctx, grantId) => {
  revokedGrants.add(grantId);
  asStats.grants_revoked += 1;
});
provider.on('registration_create.success', () => {
  asStats.registrations += 1;
});
provider.on('authorization.success', () => {
  asStats.authorizations += 1;
});
provider.on('grant.saved', (grant) => {
  if (!grantsBySub.has(grant.accountId)) grantsBySub.set(grant.accountId, new Set());
  grantsBySub.get(grant.accountId).add(grant.jti);
});
// JWT access tokens are not stored; remember which grant each one belongs to.
provider.on('access_token.issued', (token) => {
  if (token.grantId) grantByJti.set(token.jti, token.grantId);
});
provider.on('server_error', (_ctx, err) => log(`AS server_error: ${err?.stack ?? err}`));

async function revokeSub(sub) {
  let revoked = 0;
  for (const grantId of grantsBySub.get(sub) ?? []) {
    const grant = await provider.Grant.find(grantId);
    await Promise.all([
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
    ]);
    if (grant) {
      await grant.destroy();
      revoked += 1;
    }
    if (!revokedGrants.has(grantId)) {
      revokedGrants.add(grantId);
      asStats.grants_revoked += 1;
    }
  }
  grantsBySub.delete(sub);
  return revoked;
}

const providerCallback = provider.callback();

// Token requests run one at a time (like a database transaction per request would), so of two
// concurrent refreshes with the same refresh token the second always finds it consumed and
// triggers reuse detection, instead of both sometimes slipping through the in-memory adapter.
let tokenQueue = Promise.resolve();
async function serialized(req, res) {
  const previous = tokenQueue;
  let release;
  tokenQueue = new Promise((resolve) => {
    release = resolve;
  });
  res.once('finish', release);
  res.once('close', release);
  setTimeout(release, 10_000).unref();
  await previous;
  return providerCallback(req, res);
}

asServer.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, ISSUER);
    if (url.pathname.startsWith('/__test/')) {
      if (req.method === 'GET' && url.pathname === '/__test/stats') {
        return sendJson(res, 200, asStats);
      }
      if (req.method === 'POST' && url.pathname === '/__test/revoke') {
        const sub = url.searchParams.get('sub');
        if (!sub) return sendJson(res, 400, { error: 'sub is required' });
        return sendJson(res, 200, { revoked: await revokeSub(sub) });
      }
      if (req.method === 'POST' && url.pathname === '/__test/reset-stats') {
        asStats = freshAsStats();
        rsStats = freshRsStats();
        return sendJson(res, 200, {});
      }
      return sendJson(res, 404, { error: 'no such test endpoint' });
    }
    // RFC 8414 location of the metadata; oidc-provider serves only the OpenID one.
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      req.url = `/.well-known/openid-configuration${url.search}`;
    }
    // A request without scope would end in access_denied: nothing would be granted.
    if (req.method === 'GET' && url.pathname === '/auth' && !url.searchParams.get('scope')) {
      url.searchParams.set('scope', DEFAULT_SCOPE);
      req.url = `${url.pathname}?${url.searchParams}`;
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      return await serialized(req, res);
    }
    return providerCallback(req, res);
  } catch (err) {
    log(`AS wrapper error: ${err?.stack ?? err}`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.end();
  }
});

// ---------------------------------------------------------------------------------------------
// Resource server.

const discovery = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
const JWKS = jose.createRemoteJWKSet(new URL(discovery.jwks_uri));

const verifier = {
  async verifyAccessToken(token) {
    let payload;
    try {
      ({ payload } = await jose.jwtVerify(token, JWKS, {
        issuer: ISSUER,
        audience: RESOURCE,
        typ: 'at+jwt',
        algorithms: ['RS256'],
      }));
    } catch (err) {
      throw new InvalidTokenError(`access token rejected: ${err?.code ?? err?.message ?? err}`);
    }
    const grantId = grantByJti.get(payload.jti);
    if (grantId && revokedGrants.has(grantId)) {
      throw new InvalidTokenError('access token revoked');
    }
    return {
      token,
      clientId: String(payload.client_id ?? ''),
      scopes: String(payload.scope ?? '').split(' ').filter(Boolean),
      expiresAt: payload.exp,
      resource: new URL(RESOURCE),
      extra: { sub: payload.sub },
    };
  },
};

function buildMcpServer() {
  const server = new McpServer({ name: 'warden-oauth-world', version: '1.0.0' });
  const text = (value) => ({ content: [{ type: 'text', text: value }] });
  server.registerTool(
    'whoami',
    { description: 'The subject (sub) of the access token on this request' },
    async (extra) => text(String(extra.authInfo?.extra?.sub ?? '')),
  );
  server.registerTool(
    'echo',
    { description: 'Returns its text', inputSchema: { text: z.string() } },
    async ({ text: value }) => text(value),
  );
  server.registerTool(
    'admin',
    { description: 'Needs scope mcp:admin' },
    async (extra) => text(`admin ok for ${extra.authInfo?.extra?.sub ?? ''}`),
  );
  return server;
}

function callsAdmin(body) {
  const messages = Array.isArray(body) ? body : [body];
  return messages.some((m) => m && m.method === 'tools/call' && m.params?.name === 'admin');
}

const rsApp = createMcpExpressApp({ host: HOST });
rsApp.get('/__test/rs-stats', (_req, res) => res.json(rsStats));
rsApp.post('/__test/reset-stats', (_req, res) => {
  rsStats = freshRsStats();
  res.json({});
});
rsApp.use(
  mcpAuthMetadataRouter({
    oauthMetadata: discovery,
    resourceServerUrl: new URL(RESOURCE),
    scopesSupported: RESOURCE_SCOPE.split(' '),
    resourceName: 'warden OAuth test world',
  }),
);
rsApp.use(MCP_PATH, (_req, res, next) => {
  rsStats.requests += 1;
  res.on('finish', () => {
    if (res.statusCode === 401) rsStats.unauthorized += 1;
    else if (res.statusCode === 403) rsStats.forbidden += 1;
  });
  next();
});
rsApp.use(
  MCP_PATH,
  requireBearerAuth({ verifier, requiredScopes: ['mcp'], resourceMetadataUrl: RESOURCE_METADATA_URL }),
);
rsApp.use(MCP_PATH, (req, res, next) => {
  bump(rsStats.by_sub, String(req.auth?.extra?.sub ?? ''));
  if (req.method === 'POST' && callsAdmin(req.body) && !req.auth.scopes.includes('mcp:admin')) {
    res.set(
      'WWW-Authenticate',
      `Bearer error="insufficient_scope", scope="${RESOURCE_SCOPE}", resource_metadata="${RESOURCE_METADATA_URL}"`,
    );
    return res.status(403).json({ error: 'insufficient_scope', error_description: 'admin needs scope mcp:admin' });
  }
  return next();
});
rsApp.post(MCP_PATH, async (req, res) => {
  const server = buildMcpServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (err) {
    log(`RS error: ${err?.stack ?? err}`);
    if (!res.headersSent) {
      res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'internal error' }, id: null });
    }
  }
});
const methodNotAllowed = (_req, res) => {
  res.set('Allow', 'POST');
  res.status(405).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed (stateless server)' }, id: null });
};
rsApp.get(MCP_PATH, methodNotAllowed);
rsApp.delete(MCP_PATH, methodNotAllowed);

rsServer.on('request', rsApp);

// ---------------------------------------------------------------------------------------------
// Ready: one line on stdout, then run until stdin closes or a signal.

process.stdout.write(`${JSON.stringify({ issuer: ISSUER, resource: RESOURCE })}\n`);
log(`ready: issuer ${ISSUER}, resource ${RESOURCE}, access token TTL ${ACCESS_TOKEN_TTL}s`);

function shutdown(why) {
  log(`stopping (${why})`);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
let stdinStat;
try {
  stdinStat = fstatSync(0);
} catch {
  stdinStat = undefined;
}
// Only a pipe or socket on stdin is watched: /dev/null or a closed stdin would stop us at once.
if (stdinStat && (stdinStat.isFIFO() || stdinStat.isSocket())) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
