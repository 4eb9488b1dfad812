// Fixtures of real Zigbee2MQTT payloads, made by zigbee-herdsman-converters' own converters.
//
//   cd simulators/z2m_fixtures && npm ci && node generate.mjs
//
// For each model below: the definition is found through the package's API (findByDevice on a
// device with the model's zigbeeModel / fingerprint, the way Zigbee2MQTT finds it at
// interview), synthetic Zigbee messages (IAS zone status, genPowerCfg, genOnOff,
// genMultistateInput, msOccupancySensing, msTemperatureMeasurement, Tuya datapoints, Lumi
// attributes, IAS ACE commands) are fed through the definition's OWN fromZigbee converters
// (convert(model, msg, publish, options, meta)), and the JSON objects Zigbee2MQTT would publish
// on zigbee2mqtt/<friendly_name> are written to tests/data/z2m/models/<model>.json with the
// definition's exposes (serialized as bridge/devices lists them) and what each case is about
// (`expect`: the Zigbee2MQTT keys and values the case shows). tests/data/z2m/bridge_devices.json
// is the zigbee2mqtt/bridge/devices message of a network with all of them and a coordinator.
//
// Output is deterministic (no clock, no randomness): running it again gives the same files.

import fs from "node:fs";
import path from "node:path";
import {createRequire} from "node:module";
import {fileURLToPath} from "node:url";

import * as zhc from "zigbee-herdsman-converters";

const require = createRequire(import.meta.url);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, "../../tests/data/z2m");
const ZHC_VERSION = require("zigbee-herdsman-converters/package.json").version;

zhc.setLogger({debug() {}, info() {}, warning() {}, error() {}});

// The catalogue: [class, model]. Classes: smoke, gas, co, water_leak, contact, occupancy,
// presence, button, temperature. Models sold in China (Aqara/Xiaomi, Heiman, Tuya and its
// white labels, Sonoff, Moes).
const MODELS = [
    ["smoke", "JTYJ-GD-01LM/BW"], ["smoke", "HS1SA-E"], ["smoke", "HS3SA/HS1SA"],
    ["smoke", "JY-GZ-01AQ"], ["smoke", "TS0205"], ["smoke", "TS0601_smoke_1"],
    ["smoke", "PA-44Z"], ["smoke", "ZSS-QY-SSD-A-EN"], ["smoke", "TS0601_smoke_5"],
    ["smoke", "HS2SA-1"],
    ["gas", "JTQJ-BF-01LM/BW"], ["gas", "JT-BZ-01AQ/A"], ["gas", "HS3CG"], ["gas", "HS1CG-M"],
    ["gas", "TS0204"], ["gas", "TS0601_gas_sensor_1"], ["gas", "TS0601_gas_sensor_2"],
    ["gas", "TS0601_gas_sensor_4"],
    ["co", "HS1CA-E"], ["co", "HS1CA-M"], ["co", "ZC-HM"], ["co", "JKD-816COM-Z"],
    ["water_leak", "SJCGQ11LM"], ["water_leak", "SJCGQ12LM"], ["water_leak", "HS1WL/HS3WL"],
    ["water_leak", "TS0207_water_leak_detector"], ["water_leak", "SNZB-05P"],
    ["water_leak", "TS0601_water_sensor"],
    ["contact", "MCCGQ11LM"], ["contact", "MCCGQ14LM"], ["contact", "HS1DS"],
    ["contact", "TS0203"], ["contact", "SNZB-04"],
    ["occupancy", "RTCGQ11LM"], ["occupancy", "RTCGQ14LM"], ["occupancy", "HS3MS"],
    ["occupancy", "TS0202"], ["occupancy", "SNZB-03"], ["occupancy", "TS0601_pir"],
    ["presence", "RTCZCGQ11LM"], ["presence", "SNZB-06P"], ["presence", "ZG-204ZM"],
    ["presence", "ZY-M100-S_1"], ["presence", "MIR-HE200-TY"],
    ["button", "HS1EB/HS1EB-E"], ["button", "HS1RC-N"], ["button", "TS0601_sos"],
    ["button", "TS0215A_sos"], ["button", "TS0215A_remote"], ["button", "WXKG11LM"],
    ["button", "WXKG01LM"], ["button", "WXKG12LM"], ["button", "TS0041"], ["button", "TS0042"],
    ["button", "TS0044"], ["button", "TS0218"], ["button", "SNZB-01"], ["button", "SNZB-01-KF"],
    ["temperature", "WSDCGQ11LM"], ["temperature", "WSDCGQ01LM"], ["temperature", "SNZB-02"],
    ["temperature", "TS0201"], ["temperature", "HS1HT"],
    ["temperature", "TS0601_temperature_humidity_sensor_1"],
];

// Keys of a published state the gateway cares about; a case is made for each value of these.
const ALARM_KEYS = ["smoke", "gas", "carbon_monoxide", "water_leak", "contact", "occupancy",
    "presence"];
const CASE_KEYS = [...ALARM_KEYS, "action", "tamper", "battery_low", "battery_state",
    "device_fault", "fault", "fault_alarm", "gas_value", "gas_density", "co"];
const STATE_KEYS = new Set([...CASE_KEYS, "temperature", "humidity", "battery", "voltage"]);

// ---------------------------------------------------------------------------------------
// A device as zigbee-herdsman presents it to the converters (what they read of it).

// The converters tell endpoints and devices apart by class name (lib/utils isEndpoint/isDevice).
class Endpoint {
    constructor(id, ieee) {
        Object.assign(this, {ID: id, deviceIeeeAddress: ieee, profileID: 260, deviceID: 0,
            inputClusters: [], outputClusters: [], clusters: {}, meta: {}, binds: [],
            configuredReportings: []});
    }
    getInputClusters() { return []; }
    getOutputClusters() { return []; }
    supportsInputCluster() { return true; }
    supportsOutputCluster() { return true; }
    getClusterAttributeValue() { return undefined; }
    saveClusterAttributeKeyValue() {}
    async read() { return {}; }
    async write() {}
    async command() {}
    async bind() {}
    async unbind() {}
    async configureReporting() {}
    async defaultResponse() {}
    async addToGroup() {}
}

class Device {
    constructor(ieee, nwk, modelID, manufacturerName, type, powerSource, endpointIds) {
        Object.assign(this, {ieeeAddr: ieee, networkAddress: nwk, modelID, manufacturerName,
            type, powerSource, interviewCompleted: true, interviewing: false, meta: {},
            customClusters: {}, applicationVersion: 1, stackVersion: 0, zclVersion: 3,
            hardwareVersion: 1, dateCode: "20230101", softwareBuildID: "1.0.0",
            manufacturerID: 4098, isDeleted: false, linkquality: 120});
        this.endpoints = endpointIds.map((id) => new Endpoint(id, ieee));
        for (const ep of this.endpoints) ep.getDevice = () => this;
    }
    getEndpoint(id) { return this.endpoints.find((e) => e.ID === id); }
    save() {}
    async removeFromDatabase() {}
    async lqi() { return {neighbors: []}; }
}

// Definitions by model, with what identifies them at interview (zigbeeModel or fingerprint).
function rawDefinitionsByModel() {
    const dir = path.join(path.dirname(require.resolve("zigbee-herdsman-converters")), "devices");
    const byModel = new Map();
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".js")).sort()) {
        for (const d of require(path.join(dir, f)).definitions ?? []) {
            if (!byModel.has(d.model)) byModel.set(d.model, d);
        }
    }
    return byModel;
}

const IEEE_PREFIX = {Xiaomi: "0x00158d00", Aqara: "0x54ef4410", Heiman: "0x000d6f00",
    Tuya: "0xa4c13800", SONOFF: "0x00124b00", Moes: "0xa4c13801"};

async function findDefinition(raw, index) {
    const fp = raw.fingerprint?.[0];
    const modelID = raw.zigbeeModel?.[0] ?? fp?.modelID ?? "TS0601";
    const manufacturerName = fp?.manufacturerName ?? raw.vendor;
    const endpointIds = fp?.endpoints?.map((e) => e.ID) ?? [1, 2, 3, 4].slice(
        0, /TS004(\d)/.test(modelID) ? Number(modelID.slice(-1)) : 1);
    const prefix = IEEE_PREFIX[raw.vendor] ?? "0x84fd27ff";
    const ieee = `${prefix}${(0x1000 + index * 17).toString(16).padStart(8, "0")}`;
    const battery = !/^(TS0601_pir|ZY-M100|MIR-HE200|RTCZCGQ11LM|SNZB-06P|JT-BZ|JTQJ|JKD|TS0601_gas|HS3CG|HS1CG|ZC-HM)/.test(raw.model);
    const device = new Device(ieee, 0x1000 + index * 17 & 0xffff, modelID, manufacturerName,
        battery ? "EndDevice" : "Router", battery ? "Battery" : "Mains (single phase)",
        endpointIds);
    if (fp?.powerSource) device.powerSource = fp.powerSource;
    if (fp?.type) device.type = fp.type;
    const definition = await zhc.findByDevice(device);
    if (!definition) throw new Error(`${raw.model}: findByDevice found nothing for ${modelID}/${manufacturerName}`);
    return {device, definition};
}

// ---------------------------------------------------------------------------------------
// Synthetic Zigbee messages.

function lumiStruct(voltageMv) {     // Lumi's 0xF7 TLV: tag 1 (voltage, uint16 0x21)
    return Buffer.from([0x01, 0x21, voltageMv & 0xff, voltageMv >> 8]);
}

const POWER = [
    {cluster: "genPowerCfg", type: "attributeReport",
        data: {batteryPercentageRemaining: 170, batteryVoltage: 29}},
    {cluster: "genBasic", type: "attributeReport", data: {65281: {1: 3005, 100: 0}}},
    {cluster: "manuSpecificLumi", type: "attributeReport", data: {247: lumiStruct(3005)}},
];

function zclStimuli(device) {
    const out = [];
    for (const z of [1, 2, 0, 3, 4, 8]) {
        out.push({cluster: "ssIasZone", type: "commandStatusChangeNotification",
            data: {zonestatus: z, extendedstatus: 0}});
        out.push({cluster: "ssIasZone", type: "attributeReport", data: {zoneStatus: z}});
    }
    for (const v of [1, 0]) {
        out.push({cluster: "msOccupancySensing", type: "attributeReport", data: {occupancy: v}});
        out.push({cluster: "genOnOff", type: "attributeReport", data: {onOff: v}});
        for (const attr of [314, 322, 0x0160, 0x013b]) {   // Lumi: alarm states, FP1 presence
            out.push({cluster: "manuSpecificLumi", type: "attributeReport", data: {[attr]: v}});
        }
    }
    // a press and release (single), a press held past the hold time (hold, then release)
    out.push({sequence: [{cluster: "genOnOff", type: "attributeReport", data: {onOff: 0}},
        {cluster: "genOnOff", type: "attributeReport", data: {onOff: 1}}]});
    out.push({sequence: [{cluster: "genOnOff", type: "attributeReport", data: {onOff: 0}},
        {sleep: 1200}, {cluster: "genOnOff", type: "attributeReport", data: {onOff: 1}}]});
    // Lumi motion sensors: occupancy with the illuminance (attribute 0x0112)
    out.push({cluster: "manuSpecificLumi", type: "attributeReport", data: {illuminance: 65636}});
    for (const n of [2, 3, 4, 5]) {
        out.push({cluster: "genOnOff", type: "attributeReport", data: {32768: n}});
    }
    for (const v of [0, 1, 2, 3, 4, 5, 6, 16, 17, 18, 255]) {
        out.push({cluster: "genMultistateInput", type: "attributeReport", data: {presentValue: v}});
    }
    for (const cmd of ["commandOn", "commandOff", "commandToggle"]) {
        out.push({cluster: "genOnOff", type: cmd, data: {}});
    }
    for (const ep of device.endpoints) {        // Tuya scene buttons: one endpoint per key
        for (const v of [0, 1, 2]) {
            out.push({cluster: "genOnOff", type: "commandTuyaAction", endpoint: ep.ID,
                data: {value: v, data: [v]}});
        }
    }
    for (const armmode of [0, 1, 2, 3, 4]) {
        out.push({cluster: "ssIasAce", type: "commandArm", data: {armmode, code: "", zoneid: 0}});
    }
    for (const cmd of ["commandEmergency", "commandPanic", "commandFire"]) {
        out.push({cluster: "ssIasAce", type: cmd, data: {}});
    }
    out.push({cluster: "msTemperatureMeasurement", type: "attributeReport",
        data: {measuredValue: 2150}});
    out.push({cluster: "msRelativeHumidity", type: "attributeReport",
        data: {measuredValue: 5530}});
    return out;
}

const TUYA = {raw: 0, bool: 1, number: 2, string: 3, enum: 4, bitmap: 5};

function tuyaDp(dp, datatype, value) {
    let data;
    if (datatype === TUYA.number) {
        data = Buffer.alloc(4);
        data.writeInt32BE(value);
    } else {
        data = Buffer.from([value ? Number(value) : 0]);
    }
    return {dp, datatype, data};
}

// Raw Tuya datapoint values of the type the exposed property has (a binary property is sent
// as a bool or an enum, a number as a 4-byte value, an enum as an enum).
function tuyaCandidates(expose) {
    const bools = [[TUYA.bool, true], [TUYA.bool, false]];
    const enums = [...Array(10).keys()].map((v) => [TUYA.enum, v]);
    const numbers = [85, 553, 215, 0].map((v) => [TUYA.number, v]);
    if (expose?.type === "numeric") return numbers;
    if (expose?.type === "enum") return enums;
    if (expose?.type === "binary") return [...bools, ...enums];
    return [...bools, ...enums, ...numbers];
}

function tuyaStimuli(definition, exposes) {
    const out = [];
    const known = definition.meta?.tuyaDatapoints;
    // definitions with a datapoint table: its datapoints; older ("legacy") converters decode
    // fixed datapoint numbers in code: every datapoint 1..25
    const dps = known ? known.filter(([, key]) => STATE_KEYS.has(key))
        : [...Array(25).keys(), ...[...Array(10).keys()].map((i) => i + 100)]
            .map((i) => [i + 1, undefined]);
    for (const [dp, key] of dps) {
        const expose = exposes.find((e) => e.property === key);
        for (const [datatype, v] of tuyaCandidates(expose)) {
            out.push({cluster: "manuSpecificTuya", type: "commandDataReport",
                data: {dpValues: [tuyaDp(dp, datatype, v)]}});
        }
    }
    return out;
}

let seq = 1;

// Zigbee2MQTT options of every device here: motion sensors that never send "no motion" get
// it published by the converter after this many seconds (default 60-90)
const OPTIONS = {occupancy_timeout: 2};

async function convert(definition, device, stimulus, state, published) {
    if (stimulus.sequence) {
        let payload = {};
        for (const step of stimulus.sequence) {
            if (step.sleep) await new Promise((resolve) => setTimeout(resolve, step.sleep));
            else payload = {...payload, ...await convert(definition, device, step, state, published)};
        }
        return payload;
    }
    const endpoint = device.getEndpoint(stimulus.endpoint ?? device.endpoints[0].ID);
    const converters = definition.fromZigbee.filter((c) => c.cluster === stimulus.cluster &&
        (Array.isArray(c.type) ? c.type.includes(stimulus.type) : c.type === stimulus.type));
    let payload = {};
    for (const converter of converters) {
        seq = (seq % 250) + 1;
        const data = {...stimulus.data};
        if (stimulus.cluster === "manuSpecificTuya") data.seq = seq;
        const msg = {data, endpoint, device, type: stimulus.type, cluster: stimulus.cluster,
            linkquality: 120, groupID: 0,
            meta: {zclTransactionSequenceNumber: seq, manufacturerCode: null, frameControl: {}}};
        const meta = {device, logger: undefined, state: {detection_interval: 2, ...state},
            deviceExposesChanged() {}};
        // what a converter publishes itself (e.g. after a timer) is an event of its own
        const publish = (p) => published.push(p);
        try {
            const result = await converter.convert(definition, msg, publish, OPTIONS, meta);
            if (result && typeof result === "object") payload = {...payload, ...result};
        } catch (error) {
            // a converter that needs more of a real network than this fake: no output
            if (process.env.Z2M_FIXTURES_DEBUG) {
                console.error(definition.model, converter.cluster, stimulus.type, error.message);
            }
        }
    }
    zhc.postProcessConvertedFromZigbeeMessage(definition, payload, OPTIONS, device);
    return payload;
}

function interesting(payload) {
    return Object.fromEntries(Object.entries(payload).filter(([k]) => STATE_KEYS.has(k)));
}

// A value the exposes allow for the property (converters that pass a raw datapoint through
// give back whatever they got: only values a real device can publish are kept).
function fits(exposes, key, value) {
    const expose = exposes.find((e) => e.property === key);
    if (key === "action") return typeof value === "string" && value !== "";
    if (!expose) return true;
    if (expose.type === "binary") return value === expose.value_on || value === expose.value_off;
    if (expose.type === "enum") return expose.values.includes(value);
    if (expose.type === "numeric") {
        return typeof value === "number" && (expose.value_min === undefined ||
            value >= expose.value_min) && (expose.value_max === undefined || value <= expose.value_max);
    }
    return true;
}

function exposesOf(definition, device) {
    const list = typeof definition.exposes === "function"
        ? definition.exposes(device, {}) : definition.exposes;
    // Zigbee2MQTT adds the link quality to every device's exposes
    const lqi = new zhc.Numeric("linkquality", zhc.access.STATE).withUnit("lqi")
        .withDescription("Link quality (signal strength)").withValueMin(0).withValueMax(255)
        .withCategory("diagnostic");
    return JSON.parse(JSON.stringify([...list, lqi]));
}

function actionValues(exposes) {
    const action = exposes.find((e) => e.property === "action" || e.name === "action");
    return action?.values ?? [];
}

const NUMERIC_CASES = new Set(["gas_value", "gas_density", "co", "temperature", "humidity"]);

async function fixture(cls, raw, index) {
    const {device, definition} = await findDefinition(raw, index);
    const exposes = exposesOf(definition, device);
    const published = [];
    // the state Zigbee2MQTT has cached before the event: battery, voltage (cache_state)
    let base = {};
    for (const s of POWER) {
        base = {...base, ...await convert(definition, device, s, base, published)};
    }
    const seen = new Map();       // "key=value" -> payload of the event
    const record = (out) => {
        for (const [k, v] of Object.entries(interesting(out))) {
            if (!CASE_KEYS.includes(k) && !NUMERIC_CASES.has(k)) continue;
            if (v === undefined || v === null || !fits(exposes, k, v)) continue;
            if (NUMERIC_CASES.has(k) && [...seen.values()].some((h) => h.key === k)) continue;
            const tag = `${k}=${JSON.stringify(v)}`;
            if (!seen.has(tag)) seen.set(tag, {key: k, value: v, out});
        }
    };
    for (const s of [...zclStimuli(device), ...tuyaStimuli(definition, exposes)]) {
        record(await convert(definition, device, s, base, published));
    }
    await new Promise((resolve) => setTimeout(resolve, 5000));   // converters' own timers
    for (const p of published) record(p);
    const cases = [];
    const add = (name, out, expect) => cases.push({name,
        payload: {...base, ...out, linkquality: 120}, expect});
    const main = ALARM_KEYS.filter((k) => exposes.some((e) => e.property === k));
    for (const k of main) {
        for (const value of [true, false]) {
            const hit = seen.get(`${k}=${value}`);
            if (!hit) continue;
            const alarm = k === "contact" ? !value : value;     // contact: true = closed
            add(`${k} ${alarm ? "alarm" : "normal"}`, hit.out, {[k]: value});
        }
    }
    for (const [tag, hit] of seen) {
        if (main.includes(hit.key) || hit.key === "action") continue;
        if (hit.key === "temperature" || hit.key === "humidity") continue;
        add(tag, hit.out, {[hit.key]: hit.value});
    }
    const actions = actionValues(exposes);
    const sent = [...seen.values()].filter((h) => h.key === "action").map((h) => h.value);
    for (const action of [...actions, ...sent.filter((a) => !actions.includes(a))]) {
        const hit = seen.get(`action=${JSON.stringify(action)}`);
        if (hit) add(`action ${action}`, hit.out, {action});
    }
    const th = [...seen.values()].filter((h) => h.key === "temperature" || h.key === "humidity");
    if (th.length) {
        const out = Object.assign({}, ...th.map((h) => ({[h.key]: h.value})));
        add("temperature and humidity", out, out);
    }
    if ("battery" in base || "voltage" in base) {
        add("battery report", {}, Object.fromEntries(
            ["battery", "voltage"].filter((k) => k in base).map((k) => [k, base[k]])));
    }
    return {
        device, definition, exposes,
        doc: {
            generator: `simulators/z2m_fixtures/generate.mjs, zigbee-herdsman-converters ${ZHC_VERSION}`,
            class: cls, vendor: definition.vendor, model: definition.model,
            description: definition.description, model_id: device.modelID,
            manufacturer: device.manufacturerName, exposes,
            // exposed actions no synthetic message made the converters send
            actions_not_reproduced: actions.filter((a) => !sent.includes(a)),
            // actions the converters send that the exposes do not list
            actions_not_exposed: sent.filter((a) => !actions.includes(a)),
            cases,
        },
    };
}

function bridgeEntry(f) {
    const {device, definition, exposes} = f;
    return {
        ieee_address: device.ieeeAddr, type: device.type, network_address: device.networkAddress,
        supported: true, friendly_name: device.ieeeAddr, disabled: false,
        description: null,
        definition: {
            model: definition.model, vendor: definition.vendor,
            description: definition.description, exposes,
            supports_ota: Boolean(definition.ota),
            options: JSON.parse(JSON.stringify(definition.options ?? [])),
        },
        power_source: device.powerSource, software_build_id: device.softwareBuildID,
        date_code: device.dateCode, model_id: device.modelID,
        manufacturer: device.manufacturerName, interview_completed: true, interviewing: false,
        interview_state: "SUCCESSFUL",
        endpoints: Object.fromEntries(device.endpoints.map((e) => [String(e.ID),
            {name: undefined, bindings: [], configured_reportings: [], scenes: [],
                clusters: {input: [], output: []}}])),
    };
}

const COORDINATOR = {
    ieee_address: "0x00124b0026b8d0c7", type: "Coordinator", network_address: 0,
    supported: true, friendly_name: "Coordinator", disabled: false, description: null,
    definition: null, power_source: null, software_build_id: null, date_code: null,
    model_id: null, manufacturer: null, interview_completed: true, interviewing: false,
    interview_state: "SUCCESSFUL",
    endpoints: {"1": {bindings: [], configured_reportings: [], scenes: [],
        clusters: {input: [], output: []}}},
};

function slug(model) {
    return model.replace(/[^A-Za-z0-9_.-]+/g, "_");
}

async function main() {
    const byModel = rawDefinitionsByModel();
    fs.rmSync(path.join(OUT, "models"), {recursive: true, force: true});
    fs.mkdirSync(path.join(OUT, "models"), {recursive: true});
    const all = [];
    const problems = [];
    // all at once: the converters' timers (hold, no-motion) run concurrently
    const made = await Promise.all(MODELS.map(([cls, model], i) =>
        byModel.has(model) ? fixture(cls, byModel.get(model), i + 1) : undefined));
    for (const [i, [, model]] of MODELS.entries()) {
        const raw = byModel.get(model);
        const f = made[i];
        if (!f) {
            problems.push(`${model}: no definition of this model in ${ZHC_VERSION}`);
            continue;
        }
        const labels = (raw.whiteLabel ?? []).map((w) => w.model);
        if (f.definition.model !== model && !labels.includes(f.definition.model)) {
            problems.push(`${model}: findByDevice gave ${f.definition.model}`);
            continue;
        }
        const alarm = f.doc.cases.some((c) => ALARM_KEYS.some((k) => k in c.expect)) ||
            f.doc.cases.some((c) => "action" in c.expect) ||
            f.doc.cases.some((c) => "temperature" in c.expect);
        if (!alarm) problems.push(`${model}: no case of its class reproduced`);
        all.push(f);
        fs.writeFileSync(path.join(OUT, "models", `${slug(f.definition.model)}.json`),
            `${JSON.stringify(f.doc, null, 1)}\n`);
    }
    const bridge = [COORDINATOR, ...all.map(bridgeEntry)];
    fs.writeFileSync(path.join(OUT, "bridge_devices.json"), `${JSON.stringify(bridge)}\n`);
    fs.writeFileSync(path.join(OUT, "VERSION"), `zigbee-herdsman-converters ${ZHC_VERSION}\n`);
    const counts = {};
    for (const f of all) counts[f.doc.class] = (counts[f.doc.class] ?? 0) + 1;
    console.log(`${all.length} models written to ${OUT}:`, JSON.stringify(counts));
    for (const p of problems) console.log(`problem: ${p}`);
    // converters' timers (an occupancy reset 90 s later) would keep node running
    process.exit(problems.length ? 1 : 0);
}

await main();
