// Local Firestore emulator (npm @firestore-emulator/server: Firestore's gRPC API in Node).
// Usage: node devtools/firestore_emulator.mjs --port 8080 [--control-port 8081]
// The control port answers DELETE /reset (wipe all data), like Google's emulator's reset call.
import http from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { FirestoreServer } = require("@firestore-emulator/server");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const port = arg("port", 8080);
const controlPort = arg("control-port", 0);
const server = new FirestoreServer();
await server.start(port);

let control = null;
if (controlPort) {
  control = http.createServer((req, res) => {
    if (req.method === "DELETE" && req.url === "/reset") {
      server.state.clear();
      res.writeHead(200).end("{}");
      return;
    }
    res.writeHead(req.url === "/" ? 200 : 404).end();
  });
  control.listen(controlPort, "127.0.0.1");
}
console.log(JSON.stringify({ ready: true, host: `127.0.0.1:${port}`, controlPort }));

const stop = () => {
  server.stop();
  if (control) control.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
