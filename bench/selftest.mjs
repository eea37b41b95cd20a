// @ts-check
// Self-test of the load generator's frame parser: a crafted server splits frames at random byte boundaries
// (7-bit, 16-bit and 64-bit lengths, a fragmented message with the event pattern split across fragments, a ping).
// Run: node bench/selftest.mjs (exit 0 = every event counted, every ping answered).
// crafted server: upgrade, then frames split at random boundaries (small/126/127 lengths, fragmentation, ping)
import net from 'node:net';
import { LoadGen } from './lib/loadgen.mjs';
/** @param {number} i */
const ev = (i) => `{"type":"project_message","projectGuid":"g","data":{"t":1,"n":${i}},"timestamp":"x","id":"${i}"}`;
/** @param {number} op @param {string} payload @param {boolean} [fin] */
function frame(op, payload, fin = true) {
  const b = Buffer.from(payload); const len = b.length;
  let h;
  if (len < 126) { h = Buffer.from([(fin ? 0x80 : 0) | op, len]); }
  else if (len < 65536) { h = Buffer.alloc(4); h[0] = (fin ? 0x80 : 0) | op; h[1] = 126; h.writeUInt16BE(len, 2); }
  else { h = Buffer.alloc(10); h[0] = (fin ? 0x80 : 0) | op; h[1] = 127; h.writeUInt32BE(0, 2); h.writeUInt32BE(len, 6); }
  return Buffer.concat([h, b]);
}
let expected = 0; let pongs = 0;
const srv = net.createServer((s) => {
  let buf = '';
  s.on('data', (d) => {
    if (!buf.includes('\r\n\r\n')) {
      buf += d.toString('latin1');
      if (buf.includes('\r\n\r\n')) {
        s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      }
      return;
    }
    // client frames: join (text) -> ack; pong (0x8A) count
    for (let i = 0; i < d.length; i++) if (d[i] === 0x8a) pongs++;
    if (d.includes('join_project')) {
      const parts = [frame(1, '{"type":"join_project","id":"j1"}')];
      let n = 0;
      parts.push(frame(1, ev(n++)));                                   // small
      const arr = []; for (let i = 0; i < 20; i++) arr.push(ev(n++));
      parts.push(frame(1, '[' + arr.join(',') + ']'));                   // 126-length
      const big = []; for (let i = 0; i < 900; i++) big.push(ev(n++));
      parts.push(frame(1, '[' + big.join(',') + ']'));                   // 127-length (>64KB)
      parts.push(frame(9, 'pi'));                                        // ping mid-stream
      const fr = []; for (let i = 0; i < 30; i++) fr.push(ev(n++));
      const fs = '[' + fr.join(',') + ']';
      parts.push(frame(1, fs.slice(0, 100), false));                     // fragmented (pattern split across fragments)
      parts.push(frame(0, fs.slice(100, 1500), false));
      parts.push(frame(0, fs.slice(1500), true));
      expected += n;
      const all = Buffer.concat(parts);
      let off = 0;
      const step = () => {
        if (off >= all.length) return;
        const k = 1 + Math.floor(Math.random() * 700);
        s.write(all.subarray(off, off + k)); off += k;
        setImmediate(step);
      };
      step();
    }
  });
});
srv.listen(0, '127.0.0.1', async () => {
  const port = /** @type {import('node:net').AddressInfo} */ (srv.address()).port;
  const lg = new LoadGen({ host: '127.0.0.1', port, path: '/ws', mode: 'plain', rooms: ['g'], count: 50, rate: 1000, workers: 2 });
  await lg.start();
  await lg.connect();
  await new Promise((r) => setTimeout(r, 1500));
  const s = await lg.stats();
  const ok = s.events === expected && s.frames === 250 && s.pings === 50 && Object.keys(s.errors).length === 0;
  console.log(ok ? 'selftest OK' : 'selftest FAILED', { events: s.events, expected, frames: s.frames, pings: s.pings, pongsSeenByServer: pongs, errors: s.errors });
  await lg.close(); srv.close(); process.exit(ok ? 0 : 1);
});
