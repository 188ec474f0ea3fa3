// Plain HTTP in front of `wrangler dev --local-protocol https`: every
// connection to 127.0.0.1:<listen> is carried byte for byte over TLS to
// 127.0.0.1:<target> (wrangler's self-signed certificate is not checked: both
// ends are this machine). So one worker serves HTTPS, which registry clients
// (skopeo, podman, docker) try first, and plain HTTP for curl and apt.
// Usage: node scripts/plain-http.mjs <listen port> <target port>
import net from "node:net";
import tls from "node:tls";

const [listen, target] = process.argv.slice(2).map(Number);
net.createServer((client) => {
  const upstream = tls.connect({ host: "127.0.0.1", port: target, rejectUnauthorized: false });
  client.pipe(upstream).pipe(client);
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on("error", close);
  upstream.on("error", close);
}).listen(listen, "127.0.0.1");
