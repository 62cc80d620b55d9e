#!/usr/bin/env node
// A js-libp2p client reading gpumesh's DHT the way any outside implementation would: stock
// transports, kad in client mode under gpumesh's protocol name, its own check of the signed
// worker record, and provider lookups by CID. It prints one JSON object on stdout.
//
//   node read-gpumesh.mjs --addr /ip4/127.0.0.1/tcp/4001/p2p/12D3… --worker 12D3… \
//     --service ocr --shards 8 [--timeout-ms 15000]
//
// Exit code 0 when the record verified and the worker was found among the providers, 1 when
// either did not, 2 on bad arguments.

import './node20.mjs'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'

// What gpumesh publishes (dht/src/keys.rs, dht/src/signed.rs).
const KAD_PROTOCOL = '/gpumesh/kad/1.0.0'
const WORKER_PREFIX = '/gpumesh/v1/worker/'
const SERVICE_PREFIX = '/gpumesh/v1/svc/'
const RECORD_DOMAIN = 'gpumesh-worker-record'
const RECORD_PAYLOAD_TYPE = '/gpumesh/v1/worker'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

// The provider key of one shard of a service's index: CIDv1 (raw) of the sha2-256 of the
// string key. kad carries the CID's multihash on the wire, as go and js kad servers expect.
async function serviceCid (service, shard) {
  const digest = await sha256.digest(encoder.encode(`${SERVICE_PREFIX}${service}/${shard}`))
  return CID.createV1(raw.code, digest)
}

// Opens a worker record envelope and checks it as gpumesh does: the signature over the
// libp2p signed-envelope payload (domain + payload type + payload), the payload type, and that
// the signer's peer id is both the record's `peer_id` and the one in the key. Throws if not.
async function openWorkerRecord (worker, value) {
  const envelope = await RecordEnvelope.openAndCertify(value, RECORD_DOMAIN)
  if (decoder.decode(envelope.payloadType) !== RECORD_PAYLOAD_TYPE) {
    throw new Error('unexpected payload type')
  }
  const signer = peerIdFromPublicKey(envelope.publicKey)
  const record = JSON.parse(decoder.decode(envelope.payload))
  if (!signer.equals(worker) || record.peer_id !== signer.toString()) {
    throw new Error(`signer ${signer} is not worker ${worker}`)
  }
  if (typeof record.expires_at_ms !== 'number' || record.expires_at_ms <= Date.now()) {
    throw new Error('record expired')
  }
  return { signer: signer.toString(), record }
}

// kad-dht refuses values under a key namespace it has no validator for; the validator is also
// where a forged or foreign value is dropped before it can win the selection.
function workerFromKey (key) {
  const text = decoder.decode(key)
  if (!text.startsWith(WORKER_PREFIX)) throw new Error(`not a worker key: ${text}`)
  return peerIdFromString(text.slice(WORKER_PREFIX.length))
}

const gpumeshValidator = async (key, value) => {
  await openWorkerRecord(workerFromKey(key), value)
}

// Newest `seq` wins, as in gpumesh; records that fail to open sort last.
const gpumeshSelector = async (key, values) => {
  const worker = workerFromKey(key)
  let best = 0
  let bestSeq = -1
  for (const [i, v] of values.entries()) {
    try {
      const { record } = await openWorkerRecord(worker, v)
      if (record.seq > bestSeq) { best = i; bestSeq = record.seq }
    } catch {}
  }
  return best
}

async function waitFor (cond, ms) {
  const until = Date.now() + ms
  while (!cond()) {
    if (Date.now() > until) return false
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return true
}

async function readRecord (dht, worker, signal) {
  const out = { found: false, verified: false }
  const key = encoder.encode(`${WORKER_PREFIX}${worker}`)
  try {
    for await (const event of dht.get(key, { signal })) {
      if (event.name !== 'VALUE') continue
      out.found = true
      out.from = event.from.toString()
      const { signer, record } = await openWorkerRecord(worker, event.value)
      Object.assign(out, {
        verified: true,
        signer,
        seq: record.seq,
        services: record.services,
        tunnel_url: record.tunnel_url
      })
      break
    }
  } catch (e) {
    out.error = String(e?.message ?? e)
  }
  return out
}

async function findProviders (dht, service, shards, signal) {
  const cids = []
  const providers = new Set()
  const errors = []
  for (let shard = 0; shard < shards; shard++) {
    const cid = await serviceCid(service, shard)
    cids.push(cid.toString())
    try {
      for await (const event of dht.findProviders(cid, { signal })) {
        if (event.name !== 'PROVIDER') continue
        for (const p of event.providers) providers.add(p.id.toString())
      }
    } catch (e) {
      errors.push(`shard ${shard}: ${e?.message ?? e}`)
    }
  }
  return { cids, providers: [...providers], errors }
}

async function main () {
  const { values: args } = parseArgs({
    options: {
      addr: { type: 'string' },
      worker: { type: 'string' },
      service: { type: 'string' },
      shards: { type: 'string', default: '1' },
      'timeout-ms': { type: 'string', default: '15000' }
    }
  })
  if (args.addr == null || args.worker == null || args.service == null) {
    console.error('usage: read-gpumesh.mjs --addr MULTIADDR --worker PEER_ID --service NAME [--shards N]')
    return 2
  }
  const worker = peerIdFromString(args.worker)
  const shards = Number.parseInt(args.shards, 10)
  const signal = AbortSignal.timeout(Number.parseInt(args['timeout-ms'], 10))

  const node = await createLibp2p({
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: KAD_PROTOCOL,
        clientMode: true,
        // Loopback and LAN gateways are fine here; the default mapper drops private addresses.
        peerInfoMapper: passthroughMapper,
        validators: { gpumesh: gpumeshValidator },
        selectors: { gpumesh: gpumeshSelector }
      })
    }
  })
  const result = { peer_id: node.peerId.toString() }
  try {
    const gateway = multiaddr(args.addr)
    await node.dial(gateway, { signal })
    // The gateway enters our routing table once identify shows it speaks KAD_PROTOCOL.
    result.gateway_in_routing_table = await waitFor(
      () => node.services.dht.routingTable.size > 0, 10_000)
    result.record = await readRecord(node.services.dht, worker, signal)
    const found = await findProviders(node.services.dht, args.service, shards, signal)
    result.provider_cids = found.cids
    result.providers = found.providers
    result.provider_errors = found.errors
    result.worker_is_provider = found.providers.includes(worker.toString())
    result.still_connected = node.getConnections().length > 0
  } catch (e) {
    result.error = String(e?.message ?? e)
  } finally {
    await node.stop()
  }
  console.log(JSON.stringify(result))
  return result.record?.verified && result.worker_is_provider ? 0 : 1
}

process.exitCode = await main()
