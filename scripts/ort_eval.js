#!/usr/bin/env node
// Runs an exported ONNX model in ONNX Runtime (npm onnxruntime-node, CPU) on
// the images `nibble eval ... --engine int --dump DIR` wrote, and compares:
//
//   nibble eval runs/x/best.h5 --engine int --dump /tmp/d
//   nibble export runs/x/best.h5 --format onnx -o model.onnx
//   node scripts/ort_eval.js model.onnx /tmp/d [--batch 500] [--channels 3]
//
// Prints ONNX Runtime's top-1 on DIR/labels.i32 and, for each of
// DIR/logits_fake.f32 (nibble's fake-quant model) and DIR/logits_int.f32
// (the integer engine) that exists, the largest |logit difference| and the
// images whose top-1 answers agree; writes DIR/logits_ort.f32. With --json,
// one JSON object instead. Exit 1 with the reason on failure.
//
// onnxruntime-node is looked up from this script's folder upwards (install it
// at the repository root: npm install --no-save --ignore-scripts onnxruntime-node).
'use strict';
const fs = require('fs');
const path = require('path');

function readF32(file) {
    const raw = fs.readFileSync(file);
    const out = new Float32Array(raw.length / 4); // copied: a Buffer need not be 4-byte aligned
    for (let i = 0; i < out.length; i++) out[i] = raw.readFloatLE(4 * i);
    return out;
}

function readI32(file) {
    const raw = fs.readFileSync(file);
    const out = new Int32Array(raw.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = raw.readInt32LE(4 * i);
    return out;
}

function argmax(a, off, k) {
    let b = 0;
    for (let j = 1; j < k; j++) if (a[off + j] > a[off + b]) b = j;
    return b;
}

// Largest |a - b| and the rows of k whose arg-max agrees.
function compare(a, b, n, k) {
    let maxDiff = 0, agree = 0;
    for (let i = 0; i < n; i++) {
        for (let j = 0; j < k; j++) maxDiff = Math.max(maxDiff, Math.abs(a[i * k + j] - b[i * k + j]));
        agree += argmax(a, i * k, k) === argmax(b, i * k, k);
    }
    return {maxDiff, agree};
}

async function main() {
    const args = process.argv.slice(2);
    const opt = {batch: 500, channels: 3, json: false};
    const pos = [];
    for (let i = 0; i < args.length; i++) {
        if (args[i] === '--batch') opt.batch = Number(args[++i]);
        else if (args[i] === '--channels') opt.channels = Number(args[++i]);
        else if (args[i] === '--json') opt.json = true;
        else pos.push(args[i]);
    }
    if (pos.length !== 2 || !(opt.batch > 0) || !(opt.channels > 0))
        throw new Error('usage: node scripts/ort_eval.js MODEL.onnx DUMP_DIR [--batch N] [--channels C] [--json]');
    const [model, dir] = pos;
    const ort = require('onnxruntime-node');
    const labels = readI32(path.join(dir, 'labels.i32'));
    const images = readF32(path.join(dir, 'images.f32'));
    const n = labels.length, per = images.length / n, C = opt.channels, side = Math.round(Math.sqrt(per / C));
    if (!n || C * side * side !== per) throw new Error(`${dir}: ${images.length} values for ${n} images of ${C} channels`);
    const session = await ort.InferenceSession.create(model, {executionProviders: ['cpu']});
    let logits = null, k = 0, correct = 0;
    const t0 = Date.now();
    for (let s = 0; s < n; s += opt.batch) {
        const b = Math.min(opt.batch, n - s);
        const x = new ort.Tensor('float32', images.subarray(s * per, (s + b) * per), [b, C, side, side]);
        const y = (await session.run({input: x})).logits;
        if (!logits) {
            k = y.dims[1];
            logits = new Float32Array(n * k);
        }
        logits.set(y.data, s * k);
    }
    const seconds = (Date.now() - t0) / 1000;
    for (let i = 0; i < n; i++) correct += argmax(logits, i * k, k) === labels[i];
    const out = Buffer.alloc(4 * logits.length);
    for (let i = 0; i < logits.length; i++) out.writeFloatLE(logits[i], 4 * i);
    fs.writeFileSync(path.join(dir, 'logits_ort.f32'), out);
    const result = {model, n, top1: correct / n, seconds, img_s: n / seconds};
    for (const [name, file] of [['fake', 'logits_fake.f32'], ['int', 'logits_int.f32']]) {
        const f = path.join(dir, file);
        if (!fs.existsSync(f)) continue;
        const other = readF32(f);
        if (other.length !== logits.length) throw new Error(`${f}: ${other.length} logits, ONNX Runtime gave ${logits.length}`);
        const c = compare(logits, other, n, k);
        result[`max_logit_diff_${name}`] = c.maxDiff;
        result[`top1_agree_${name}`] = c.agree;
    }
    if (opt.json) {
        console.log(JSON.stringify(result));
        return;
    }
    console.log(`${model}: ONNX Runtime top-1 ${(100 * result.top1).toFixed(2)}% on ${n} images ` +
                `(${result.img_s.toFixed(0)} img/s, batch ${opt.batch})`);
    for (const name of ['fake', 'int'])
        if (`max_logit_diff_${name}` in result)
            console.log(`  against nibble ${name === 'fake' ? 'fake quant' : 'integer engine'}: largest |logit difference| ` +
                        `${result[`max_logit_diff_${name}`].toPrecision(3)}, same top-1 on ` +
                        `${result[`top1_agree_${name}`]} of ${n} images`);
}

main().catch((e) => {
    console.error(`ort_eval: ${e.message || e}`);
    process.exit(1);
});
