// The seed's server.js in TypeScript: serve "beep boop" on a seaport port.
import { connect } from "@seaport/seaport";
import { createServer } from "node:http";
import process from "node:process";

const port = Number(process.env.SEAPORT_PORT ?? 9090);
const ports = connect("localhost", port, { secret: "beep boop" });
const server = createServer((_req, res) => res.end("beep boop\r\n"));

ports.service("web@1.2.3", (port, ready) => {
  server.listen(port, ready);
});
