// test/dns/server/netns.test.ts again with dns.workers 1: DNS answered in the daemon's own process.
process.env.PRIVDNS_TEST_DNS_WORKERS = '1';
await import('../server/netns.test.js');
