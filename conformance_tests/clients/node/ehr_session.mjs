// The scripted EHR session (issue 9) with fhir-kit-client, against any FHIR R4 base URL.
//
//   node ehr_session.mjs --base-url http://127.0.0.1:8080/fhir [--token TOKEN]
//
// Each step checks what it got; the first that fails ends the program with exit 1 and
// "FAILED <step>: <what>" on stderr. On success one JSON line on stdout sums the session up (the
// same keys as the Java and Python clients print, read by conformance_tests/test_clients.py).
import { createHash, randomInt, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Client } from 'fhir-kit-client';

const INS_NIR = 'urn:oid:1.2.250.1.213.1.4.8';
const CLASSES = 'urn:oid:1.2.250.1.213.1.1.4.1'; // TRE_A03-ClasseDocument
const SECTORS = 'https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite';
const MHD_LIST_TYPES = 'https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes';
const FHIR_JSON = 'application/fhir+json';

class StepFailed extends Error {}

function check(condition, what) {
  if (!condition) throw new StepFailed(what);
}

const urn = () => `urn:uuid:${randomUUID()}`;
const pad = (n, width) => String(n).padStart(width, '0');

// A 15-digit NIR, new each run: sex, birth year and month, a random place and order, the key.
function insNir(male, birthDate) {
  const body = `${male ? 1 : 2}${birthDate.slice(2, 4)}${birthDate.slice(5, 7)}99${pad(randomInt(1000), 3)}${pad(randomInt(1000), 3)}`;
  return body + pad(97 - Number(BigInt(body) % 97n), 2);
}

// The id in a Location (absolute or relative, with or without _history).
function localId(location, type) {
  const parts = (location || '').split('/');
  const at = parts.lastIndexOf(type, parts.length - 2);
  check(at >= 0 && parts[at + 1], `location ${location} is not a ${type}`);
  return parts[at + 1];
}

// An ITI-65 transaction: SubmissionSet List, DocumentReference, Binary. Plain R4 that also carries
// what the DMP's PDSm profile requires (masterIdentifier, custodian, securityLabel, size and hash...).
function provideBundle(patientId, data) {
  const now = new Date().toISOString();
  const [listUrl, docUrl, binaryUrl] = [urn(), urn(), urn()];
  const subject = { reference: `Patient/${patientId}` };
  const document = {
    resourceType: 'DocumentReference',
    contained: [{
      resourceType: 'Practitioner', id: 'author',
      identifier: [{ system: 'urn:oid:1.2.250.1.71.4.2.1', value: '810000000001' }],
      name: [{ family: 'BERNARD', given: ['Claire'] }],
    }],
    masterIdentifier: { system: 'urn:ietf:rfc:3986', value: urn() },
    status: 'current',
    type: { coding: [{ system: 'http://loinc.org', code: '11488-4', display: 'Consult note' }] },
    category: [{ coding: [{ system: CLASSES, code: '10', display: 'Compte rendu' }] }],
    subject, date: now, author: [{ reference: '#author' }],
    custodian: { type: 'Organization', identifier: { system: 'urn:oid:1.2.250.1.71.4.2.2', value: '1750000001' } },
    securityLabel: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] }],
    content: [{
      attachment: {
        contentType: 'text/plain', language: 'fr-FR', url: binaryUrl, title: 'Compte rendu de consultation',
        creation: now, size: data.length, hash: createHash('sha1').update(data).digest('base64'),
      },
    }],
    context: {
      period: { start: now },
      facilityType: { coding: [{ system: SECTORS, code: 'SA07' }] },
      practiceSetting: { coding: [{ system: 'http://snomed.info/sct', code: '394802001', display: 'General medicine' }] },
    },
  };
  const submission = {
    resourceType: 'List', status: 'current', mode: 'working',
    identifier: [{ use: 'usual', system: 'urn:ietf:rfc:3986', value: urn() }],
    code: { coding: [{ system: MHD_LIST_TYPES, code: 'submissionset' }] },
    subject, date: now, entry: [{ item: { reference: docUrl } }],
  };
  const binary = { resourceType: 'Binary', contentType: 'text/plain', data: data.toString('base64') };
  const entries = [[listUrl, submission], [docUrl, document], [binaryUrl, binary]];
  return {
    bundle: {
      resourceType: 'Bundle', type: 'transaction',
      entry: entries.map(([fullUrl, resource]) => ({
        fullUrl, resource, request: { method: 'POST', url: resource.resourceType },
      })),
    },
    binaryUrl,
  };
}

async function run(client, summary, step) {
  step('metadata');
  const statement = await client.capabilityStatement();
  check(statement.resourceType === 'CapabilityStatement', `metadata returned ${statement.resourceType}`);
  check(String(statement.fhirVersion).startsWith('4.0'), `fhirVersion ${statement.fhirVersion}`);
  summary.fhirVersion = statement.fhirVersion;

  step('create-patient');
  const birthDate = `${1940 + randomInt(60)}-${pad(1 + randomInt(12), 2)}-15`;
  const ins = insNir(false, birthDate);
  const patient = await client.create({
    resourceType: 'Patient',
    body: {
      resourceType: 'Patient',
      identifier: [{ use: 'official', system: INS_NIR, value: ins }],
      name: [{ use: 'official', family: 'MARTIN', given: ['Camille', 'Louise'] },
        { use: 'usual', family: 'DURAND', given: ['Camille'] }],
      gender: 'female', birthDate,
    },
  });
  // the server may answer with no body (Prefer: return=minimal is its choice): then the Location says
  const created = patient.id ? patient.id : localId(Client.httpFor(patient).response.headers.get('location'), 'Patient');
  check(Boolean(created), 'the created Patient has no id');
  Object.assign(summary, { patient: created, ins });

  step('search-patient');
  const found = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${INS_NIR}|${ins}` } });
  const matches = (found.entry || []).filter((e) => (e.search?.mode ?? 'match') === 'match');
  summary.searchMatches = matches.length;
  check(matches.length === 1, `identifier search found ${matches.length} Patients, expected 1`);
  check(matches[0].resource.id === created, `search found Patient/${matches[0].resource.id}, created ${created}`);

  step('submit-documents');
  const data = Buffer.from(`Consultation du ${new Date().toISOString().slice(0, 10)}\nPatiente vue pour bilan annuel. RAS.\n`);
  const { bundle, binaryUrl } = provideBundle(created, data);
  let response;
  try {
    response = await client.transaction({ body: bundle });
  } catch (error) {
    // fhir-kit-client POSTs a transaction to "[base]/" (its path "/"); a server that serves only
    // "[base]" answers 404: note it and post to the base URL itself, as the spec writes it
    if (error.response?.status !== 404) throw error;
    summary.quirks.push(`transaction(): POST ${client.baseUrl}/ got 404; posted to ${client.baseUrl} instead`);
    response = await client.request(client.baseUrl, { method: 'POST', body: bundle, options: { headers: { 'content-type': FHIR_JSON } } });
  }
  check(response.type === 'transaction-response', `transaction answered a ${response.type}`);
  const entries = response.entry || [];
  check(entries.length === bundle.entry.length, `${entries.length} response entries for ${bundle.entry.length}`);
  summary.transaction = entries.map((e) => e.response?.status);
  entries.forEach((entry, n) => {
    check(String(entry.response?.status).startsWith('201'), `entry ${n} status ${entry.response?.status}, expected 201`);
    check(Boolean(entry.response.location), `entry ${n} has no location`);
  });
  const docId = localId(entries[1].response.location, 'DocumentReference');
  const binaryId = localId(entries[2].response.location, 'Binary');
  Object.assign(summary, { documentReference: docId, binary: binaryId });

  step('read-documents');
  const document = await client.read({ resourceType: 'DocumentReference', id: docId });
  check(String(document.subject?.reference).endsWith(`Patient/${created}`), `subject ${JSON.stringify(document.subject)}`);
  check(document.type?.coding?.[0]?.code === '11488-4', 'DocumentReference.type changed');
  const url = document.content?.[0]?.attachment?.url || '';
  check(url.endsWith(`Binary/${binaryId}`), `attachment.url ${url} was not resolved to Binary/${binaryId} (sent ${binaryUrl})`);
  const binary = await client.read({ resourceType: 'Binary', id: binaryId });
  check(binary.contentType === 'text/plain', `Binary.contentType ${binary.contentType}`);
  check(Buffer.from(binary.data || '', 'base64').equals(data), "the Binary's bytes differ from those sent");
  summary.binaryBytes = data.length;

  step('update-patient');
  const current = await client.read({ resourceType: 'Patient', id: created });
  // fhir-kit-client has no versioning of its own: If-Match is the ETag of the read, sent as a header
  const etag = Client.httpFor(current).response.headers.get('etag');
  check(Boolean(etag), 'the Patient read has no ETag');
  current.telecom = [{ system: 'phone', value: '+33 6 12 34 56 78', use: 'mobile' }];
  const ifMatch = { headers: { 'If-Match': etag } };
  const updated = await client.update({ resourceType: 'Patient', id: created, body: current, options: ifMatch });
  summary.versionAfterUpdate = updated.meta?.versionId;
  check(summary.versionAfterUpdate === String(Number(current.meta.versionId) + 1),
    `versionId ${summary.versionAfterUpdate} after updating version ${current.meta.versionId}`);
  let staleStatus = null;
  try {
    await client.update({ resourceType: 'Patient', id: created, body: current, options: ifMatch });
  } catch (error) {
    staleStatus = error.response?.status ?? null;
    if (staleStatus === null) throw error;
  }
  summary.staleUpdateStatus = staleStatus;
  check(staleStatus !== null, `an update with the stale If-Match ${etag} was accepted`);
  check(staleStatus === 412 || staleStatus === 409, `the stale update was refused with ${staleStatus}, expected 412 or 409`);

  step('patient-history');
  const history = await client.history({ resourceType: 'Patient', id: created });
  check(history.type === 'history', `history is a ${history.type} Bundle`);
  summary.history = (history.entry || []).map((e) => e.resource?.meta?.versionId);
  check(JSON.stringify(summary.history) === '["2","1"]', `history versions ${JSON.stringify(summary.history)}, expected ["2","1"] (newest first)`);
}

async function main() {
  const { values } = parseArgs({ options: { 'base-url': { type: 'string' }, token: { type: 'string' } } });
  if (!values['base-url']) {
    console.error('usage: node ehr_session.mjs --base-url URL [--token TOKEN]');
    return 2;
  }
  const baseUrl = values['base-url'].replace(/\/+$/, '');
  const client = new Client({ baseUrl, ...(values.token ? { bearerToken: values.token } : {}) });
  const library = JSON.parse(readFileSync(new URL('./node_modules/fhir-kit-client/package.json', import.meta.url)));
  const summary = { client: `fhir-kit-client ${library.version}`, steps: [], quirks: [] };
  const step = (name) => summary.steps.push(name);
  try {
    await run(client, summary, step);
  } catch (error) {
    const detail = error.response ? ` ${JSON.stringify(error.response.data).slice(0, 1000)}` : '';
    console.error(`FAILED ${summary.steps.at(-1) ?? 'start'}: ${error.name}: ${error.message}${detail}`);
    return 1;
  }
  console.log(JSON.stringify(summary));
  return 0;
}

process.exitCode = await main();
