// One service instance registering itself with Eureka servers through the
// real eureka-js-client, as a Node service does: one client per server
// (the emulation does not replicate between peers), heartbeats, registry
// fetches with deltas. SIGTERM deregisters and exits; SIGKILL leaves the
// lease to expire.
//
// Configuration comes as JSON in TENDER_EUREKA_INSTANCE:
//   {"servers": [URL...], "app": "GREETER", "id": "greeter-1", "ip": "127.0.0.1", "port": 9001,
//    "vip": "greeter", "metadata": {...}, "heartbeatMs": 1000, "fetchMs": 1000, "leaseSecs": 3}
//
// It prints one JSON line per event, with "msg" as the tests' log lines:
// "registered" and "deregistered" (per server), and "registry" whenever
// the instances it sees behind its own vipAddress change, as
// "ID=STATUS,..." sorted: what the real client made of the server's full
// and delta answers.
'use strict';

const Eureka = require('eureka-js-client').Eureka;

const cfg = JSON.parse(process.env.TENDER_EUREKA_INSTANCE);

function log(msg, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ msg: msg }, fields)) + '\n');
}

const quiet = { debug() {}, info() {}, warn() {}, error() {}, level() {} };

const clients = cfg.servers.map((url) => {
  const client = new Eureka({
    logger: quiet,
    shouldUseDelta: true,
    instance: {
      instanceId: cfg.id,
      app: cfg.app,
      hostName: cfg.id + '.eureka.test',
      ipAddr: cfg.ip,
      port: { '$': cfg.port, '@enabled': true },
      vipAddress: cfg.vip,
      dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
      metadata: cfg.metadata || {},
      leaseInfo: { renewalIntervalInSecs: Math.max(1, Math.round(cfg.heartbeatMs / 1000)), durationInSecs: cfg.leaseSecs },
    },
    eureka: {
      serviceUrls: { default: [url.replace(/\/?$/, '/apps/')] },
      heartbeatInterval: cfg.heartbeatMs,
      registryFetchInterval: cfg.fetchMs,
      maxRetries: 0,
    },
  });
  client.on('registered', () => log('registered', { server: url }));
  client.on('deregistered', () => log('deregistered', { server: url }));
  client.start((err) => {
    if (err) log('start failed', { server: url, error: String(err) });
  });
  return { url: url, client: client, seen: '' };
});

// What each client sees behind the vipAddress.
setInterval(() => {
  for (const c of clients) {
    const seen = (c.client.cache.vip[cfg.vip] || [])
      .map((i) => i.instanceId + '=' + i.status)
      .sort()
      .join(',');
    if (seen !== c.seen) {
      c.seen = seen;
      log('registry', { server: c.url, instances: seen });
    }
  }
}, 100);

process.on('SIGTERM', () => {
  let left = clients.length;
  for (const c of clients) {
    c.client.stop(() => {
      if (--left === 0) process.exit(0);
    });
  }
  setTimeout(() => process.exit(1), 5000);
});
