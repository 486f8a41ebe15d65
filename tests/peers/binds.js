// Bind attempts against an SMPP server with the npm `smpp` client, one connection each,
// one after the other (node-smpp writes C-octet strings of any length, as some ESMEs do):
//
//   node binds.js --port P --count N --system-id ID --password PW
//                 [--bind transceiver|transmitter|receiver] [--rebind yes]
//
// Prints "BIND <n> <command_status>" for each attempt, "CLOSED <n>" where the server
// closed without answering, and "DONE" at the end. With --rebind, a bind accepted is
// followed by a second bind on the same session ("REBIND <n> <command_status>").
'use strict';
const smpp = require('smpp');

const args = { port: 0, count: 1, 'system-id': '', password: '', bind: 'transceiver',
  rebind: 'no' };
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}

function attempt(n) {
  if (n > Number(args.count)) {
    process.stdout.write('DONE\n');
    process.exit(0);
  }
  let answered = false;
  const session = smpp.connect({ host: '127.0.0.1', port: Number(args.port) });
  session.on('error', () => {});
  session.on('close', () => {
    if (!answered) process.stdout.write(`CLOSED ${n}\n`);
    attempt(n + 1);
  });
  const bind = (tag, done) => {
    session['bind_' + args.bind]({ system_id: args['system-id'], password: args.password },
      (pdu) => {
        answered = true;
        process.stdout.write(`${tag} ${n} ${pdu.command_status}\n`);
        done(pdu.command_status);
      });
  };
  session.on('connect', () => {
    bind('BIND', (status) => {
      if (status === 0 && args.rebind === 'yes') bind('REBIND', () => session.close());
      else session.close();
    });
  });
}

attempt(1);
