// iceberg-js 1.0.0 (the real client) through the gateway: list, create, load, list, drop.
//
//   ICEBERG_JS_SECRET=<api key or token> node tests/js/roundtrip.mjs \
//     --base-url http://127.0.0.1:8080/v1/default --auth bearer --namespace ns_x \
//     [--warehouse warehouse] [--header-name X-API-Key] [--table events] [--trace]
//
// --auth: bearer -> {type: 'bearer', token}, header -> {type: 'header', name, value}, none.
// The secret comes from the environment so it never shows in a process list.
// --trace wraps fetch (transparently) to report each call's method, URL and headers, with
// credential values redacted.
// Prints one JSON object on stdout: {"ok": true, ...} and exit 0, or {"ok": false, "step",
// "error"} and exit 1 (exit 2 for bad arguments).

import { parseArgs } from 'node:util'
import { IcebergError, IcebergRestCatalog } from 'iceberg-js'

function finish(summary, code) {
  process.stdout.write(JSON.stringify(summary) + '\n')
  process.exit(code)
}

let args
try {
  args = parseArgs({
    options: {
      'base-url': { type: 'string' },
      auth: { type: 'string', default: 'bearer' },
      'header-name': { type: 'string', default: 'X-API-Key' },
      warehouse: { type: 'string' },
      namespace: { type: 'string' },
      table: { type: 'string', default: 'events' },
      trace: { type: 'boolean', default: false },
    },
    strict: true,
  }).values
} catch (err) {
  finish({ ok: false, step: 'arguments', error: { message: String(err.message) } }, 2)
}
const secret = process.env.ICEBERG_JS_SECRET ?? ''
if (!args['base-url'] || !args.namespace) {
  finish({ ok: false, step: 'arguments', error: { message: '--base-url and --namespace are required' } }, 2)
}
if (args.auth !== 'none' && !secret) {
  finish({ ok: false, step: 'arguments', error: { message: 'ICEBERG_JS_SECRET is not set' } }, 2)
}

let auth
if (args.auth === 'bearer') auth = { type: 'bearer', token: secret }
else if (args.auth === 'header') auth = { type: 'header', name: args['header-name'], value: secret }
else if (args.auth === 'none') auth = { type: 'none' }
else finish({ ok: false, step: 'arguments', error: { message: `unknown --auth ${args.auth}` } }, 2)

const requests = []
const redacted = new Set(['authorization', args['header-name'].toLowerCase()])
function traced(input, init = {}) {
  const headers = {}
  for (const [name, value] of Object.entries(init.headers ?? {})) {
    headers[name] = redacted.has(name.toLowerCase()) ? '<redacted>' : value
  }
  requests.push({ method: init.method ?? 'GET', url: String(input), headers })
  return globalThis.fetch(input, init)
}

const options = { baseUrl: args['base-url'], auth }
if (args.warehouse !== undefined) options.warehouse = args.warehouse
if (args.trace) options.fetch = traced
const catalog = new IcebergRestCatalog(options)

const ns = { namespace: [args.namespace] }
const tableId = { namespace: [args.namespace], name: args.table }
const schema = {
  type: 'struct',
  'schema-id': 0,
  fields: [
    { id: 1, name: 'id', type: 'long', required: true },
    { id: 2, name: 'name', type: 'string', required: false },
  ],
}
const has = (list, name) => list.some((n) => n.namespace.length === 1 && n.namespace[0] === name)
function check(condition, message) {
  if (!condition) throw new Error(message)
}

const summary = { ok: false, baseUrl: args['base-url'], warehouse: args.warehouse ?? null, namespace: args.namespace }
let step = 'start'
try {
  step = 'listNamespaces'
  const before = await catalog.listNamespaces()
  check(Array.isArray(before.namespaces), 'listNamespaces returned no list')
  check(!has(before.namespaces, args.namespace), 'namespace exists before it was created')
  summary.namespacesBefore = before.namespaces.length

  step = 'createNamespace'
  const created = await catalog.createNamespace(ns, { properties: { owner: 'iceberg-js' } })
  check(JSON.stringify(created.namespace) === JSON.stringify(ns.namespace), 'createNamespace echoed another namespace')

  step = 'createTable'
  const metadata = await catalog.createTable(ns, { name: args.table, schema, properties: { 'created-by': 'iceberg-js' } })
  check(typeof metadata?.['table-uuid'] === 'string', 'createTable returned no table-uuid')
  summary.tableUuid = metadata['table-uuid']
  summary.formatVersion = metadata['format-version']

  step = 'loadTable'
  const loaded = await catalog.loadTable(tableId)
  check(loaded['table-uuid'] === metadata['table-uuid'], 'loadTable returned another table')
  const current = loaded.schemas.find((s) => s['schema-id'] === loaded['current-schema-id'])
  summary.columns = current.fields.map((f) => [f.name, f.type, f.required])

  step = 'listTables'
  const { identifiers } = await catalog.listTables(ns)
  summary.tables = identifiers.map((t) => [...t.namespace, t.name].join('.'))
  check(identifiers.some((t) => t.name === args.table), 'listTables does not list the new table')

  step = 'listNamespaces (after create)'
  check(has((await catalog.listNamespaces()).namespaces, args.namespace), 'listNamespaces misses the new namespace')

  step = 'dropTable'
  await catalog.dropTable(tableId)
  step = 'tableExists (after drop)'
  check((await catalog.tableExists(tableId)) === false, 'the table still exists after dropTable')

  step = 'dropNamespace'
  await catalog.dropNamespace(ns)
  step = 'listNamespaces (after drop)'
  check(!has((await catalog.listNamespaces()).namespaces, args.namespace), 'the namespace is still listed after dropNamespace')

  summary.ok = true
  delete summary.step
} catch (err) {
  summary.step = step
  summary.error =
    err instanceof IcebergError
      ? { name: err.name, message: err.message, status: err.status, type: err.icebergType ?? null, code: err.icebergCode ?? null }
      : { name: err?.name ?? 'Error', message: String(err?.message ?? err) }
}
if (args.trace) summary.requests = requests
finish(summary, summary.ok ? 0 : 1)
