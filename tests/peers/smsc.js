// Upstream SMSC for ansim's tests: a node-smpp server on loopback.
//
//   node smsc.js --port 0 --records FILE [--system-id upstream --password secret] [--dlr]
//                [--dlr-first] [--resp-delay MS] [--max-binds N] [--ignore-over OCTETS]
//
// Prints "LISTENING <port>" once it listens. Every submit_sm is appended to FILE as one
// JSON line before it is answered, so the file is what this SMSC accepted even if it is
// killed ("at": when, in ms since the epoch). An SMSC that honours ansim's idempotency key (TLV 0x1401) answers a repeated
// key with the message id it gave the first time and marks the line "dup": true. With
// --dlr it sends a delivery receipt for each new message that asked for one; with
// --dlr-first it sends that receipt before the submit_sm_resp (SMPP allows either order).
// --resp-delay MS answers each new submit_sm MS milliseconds late (a repeated key is
// answered at once). It prints "RECEIPT_ACKED <upstream id> <status>" for each
// deliver_sm_resp, and "WEDGED <reason>" if node-smpp stops reading a session (as it
// does on a PDU over its 16384-octet limit). A line "mo SRC DST TEXT" on stdin sends a
// mobile-originated deliver_sm to every bound session. With --max-binds N, a bind past N
// sessions bound at once is refused with ESME_RBINDFAIL, as some SMSCs limit an account.
// With --ignore-over N, a submit_sm longer than N octets is read and never answered
// ("IGNORED <length>" is printed), while the session goes on with the others.
'use strict';
const fs = require('fs');
const readline = require('readline');
const smpp = require('smpp');
const defs = require('smpp/lib/defs');

// The tests compare octets: keep short_message and message_payload raw.
for (const name of ['submit_sm', 'deliver_sm']) {
  defs.commands[name].params.short_message.filter = null;
}
defs.tlvs.message_payload.filter = null;
smpp.addTLV('ansim_message_id', { id: 0x1401, type: defs.types.tlv.cstring });

const args = { port: 0, records: null, 'system-id': 'upstream', password: 'secret', dlr: false,
  'dlr-first': false, 'resp-delay': 0, 'max-binds': 0, 'ignore-over': 0 };
for (let i = 2; i < process.argv.length; i++) {
  const key = process.argv[i].replace(/^--/, '');
  if (key === 'dlr' || key === 'dlr-first') args[key] = true;
  else args[key] = process.argv[++i];
}
if (args['dlr-first']) args.dlr = true;
const respDelay = Number(args['resp-delay']);
if (!args.records) throw new Error('--records is required');

const seen = new Map();
if (fs.existsSync(args.records)) {
  for (const line of fs.readFileSync(args.records, 'utf8').split('\n')) {
    if (!line) continue;
    const rec = JSON.parse(line);
    if (rec.ansim_id && !rec.dup) seen.set(rec.ansim_id, rec.upstream_id);
  }
}
const prefix = Date.now().toString(36);
let counter = 0;
const sessions = new Set();

function bindHandler(session) {
  return (pdu) => {
    const full = Number(args['max-binds']) > 0 && sessions.size >= Number(args['max-binds']);
    if (pdu.system_id !== args['system-id'] || pdu.password !== args.password || full) {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      session.close();
      return;
    }
    session.send(pdu.response({ system_id: 'nodesmsc' }));
    sessions.add(session);
  };
}

function stamp(d) {
  const p = (n) => String(n).padStart(2, '0');
  return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) +
    p(d.getUTCHours()) + p(d.getUTCMinutes());
}

const server = smpp.createServer((session) => {
  session.on('error', (e) => {
    if (/too large/.test(String(e.message))) process.stdout.write(`WEDGED ${e.message}\n`);
  });
  session.on('close', () => sessions.delete(session));
  session.on('bind_transceiver', bindHandler(session));
  session.on('bind_transmitter', bindHandler(session));
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => { session.send(pdu.response()); session.close(); });
  const receipts = new Map(); // deliver_sm sequence -> upstream id
  session.on('deliver_sm_resp', (pdu) => {
    const id = receipts.get(pdu.sequence_number);
    if (id === undefined) return;
    receipts.delete(pdu.sequence_number);
    process.stdout.write(`RECEIPT_ACKED ${id} ${pdu.command_status}\n`);
  });
  session.on('submit_sm', (pdu) => {
    if (Number(args['ignore-over']) > 0 && pdu.command_length > Number(args['ignore-over'])) {
      process.stdout.write(`IGNORED ${pdu.command_length}\n`);
      return;
    }
    const aid = pdu.ansim_message_id || null;
    let upstreamId;
    let dup = false;
    if (aid !== null && seen.has(aid)) {
      upstreamId = seen.get(aid);
      dup = true;
    } else {
      upstreamId = prefix + (++counter).toString(16).padStart(6, '0');
      if (aid !== null) seen.set(aid, upstreamId);
    }
    const rec = {
      ansim_id: aid, upstream_id: upstreamId, dup, at: Date.now(),
      source_addr: pdu.source_addr, source_addr_ton: pdu.source_addr_ton,
      destination_addr: pdu.destination_addr, dest_addr_ton: pdu.dest_addr_ton,
      esm_class: pdu.esm_class, data_coding: pdu.data_coding,
      registered_delivery: pdu.registered_delivery,
      short_message: Buffer.from(pdu.short_message || []).toString('hex'),
      message_payload: pdu.message_payload ? Buffer.from(pdu.message_payload).toString('hex') : null,
      sar_msg_ref_num: pdu.sar_msg_ref_num ?? null,
      sar_total_segments: pdu.sar_total_segments ?? null,
      sar_segment_seqnum: pdu.sar_segment_seqnum ?? null,
      callback_num: pdu.callback_num ? 'present' : null,
    };
    fs.appendFileSync(args.records, JSON.stringify(rec) + '\n');
    const answer = () => session.send(pdu.response({ message_id: upstreamId }));
    const receipt = () => {
      const now = stamp(new Date());
      const dlr = new smpp.PDU('deliver_sm', {
        source_addr_ton: 1, source_addr_npi: 1, source_addr: pdu.destination_addr,
        dest_addr_ton: pdu.source_addr_ton, dest_addr_npi: 1, destination_addr: pdu.source_addr,
        esm_class: 4, data_coding: 0,
        short_message: Buffer.from(`id:${upstreamId} sub:001 dlvrd:001 submit date:${now}` +
          ` done date:${now} stat:DELIVRD err:000 text:`),
        receipted_message_id: upstreamId, message_state: 2,
      });
      session.send(dlr);
      receipts.set(dlr.sequence_number, upstreamId);
    };
    const wantsDlr = args.dlr && !dup && (pdu.registered_delivery & 3);
    if (wantsDlr && args['dlr-first']) receipt();
    if (respDelay > 0 && !dup) setTimeout(answer, respDelay);
    else answer();
    if (wantsDlr && !args['dlr-first']) receipt();
  });
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, src, dst, ...words] = line.trim().split(' ');
  if (cmd !== 'mo') return;
  for (const session of sessions) {
    session.deliver_sm({
      source_addr_ton: 1, source_addr_npi: 1, source_addr: src,
      dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: dst,
      esm_class: 0, data_coding: 0, short_message: Buffer.from(words.join(' ')),
    });
  }
});

server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
