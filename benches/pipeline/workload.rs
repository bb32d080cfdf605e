//! What the bench feeds the pipeline: small documents with 10 numeric features and a label,
//! and the same documents as wire events (for the in-process sink).

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use serde_json::json;

use crate::common::Rng;

/// The feature fields, as `SINK_FEATURES` lists them.
pub const FEATURES: [&str; 10] = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"];

/// The label field.
pub const LABEL: &str = "label";

/// The collection every document goes to.
pub const COLLECTION: &str = "docs";

/// `SINK_FEATURES` for these documents.
pub fn features_env() -> String {
    FEATURES.join(",")
}

/// One input document (about 200 bytes of BSON; `_id` is left to the driver): a name, ten
/// features in [-1, 1) and a boolean label that a linear rule decides.
pub fn document(rng: &mut Rng, i: u64) -> Document {
    let x: [f64; 10] = std::array::from_fn(|_| rng.unit());
    let mut d = doc! {"name": format!("user {i}")};
    for (k, v) in FEATURES.iter().zip(x) {
        d.insert(*k, v);
    }
    d.insert(LABEL, x[0] + 0.5 * x[1] - x[2] > 0.0);
    d
}

/// `n` documents, deterministic from `seed`, numbered from `first`.
pub fn documents(seed: u64, first: u64, n: u64) -> Vec<Document> {
    let mut rng = Rng::new(seed);
    (first..first + n).map(|i| document(&mut rng, i)).collect()
}

/// `n` insert events as message bodies, shaped like the bridge's for [`document`]s, with
/// distinct ids (as long as a SecantusDB resume token), keys and increasing cluster times.
pub fn insert_bodies(seed: u64, n: u64) -> Vec<Vec<u8>> {
    const T0: u32 = 1_790_000_000;
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let mut oid = [0u8; 12];
            oid[..4].copy_from_slice(&T0.to_be_bytes());
            oid[4..].copy_from_slice(&i.to_be_bytes());
            let key = ObjectId::from_bytes(oid).to_hex();
            let mut after = doc! {"_id": ObjectId::from_bytes(oid)};
            after.extend(document(&mut rng, i));
            let t = T0 + (i / 1000) as u32;
            json!({
                "id": format!("82{:0>130x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
                "op": "c",
                "key": key,
                "before": null,
                "after": mongo_cdc::bridge::encode::doc_to_json(&after),
                "updated_fields": null,
                "removed_fields": null,
                "source": {"db": "bench", "collection": COLLECTION, "cluster_time": {"t": t, "i": i % 1000 + 1}},
                "ts_ms": i64::from(t) * 1000 + (i % 1000) as i64,
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}
