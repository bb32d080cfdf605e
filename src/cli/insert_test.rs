//! `mongo-cdc insert-test`: writes test documents into the watched database (and optionally
//! updates and deletes some of them) so every kind of change can be tried by hand.

use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{DateTime, Document, doc, oid::ObjectId};

use crate::config::MongoSettings;
use crate::db::Mongo;
use crate::error::MongoError;

/// What to write.
#[derive(Debug, Clone)]
pub struct InsertPlan {
    /// Documents to insert.
    pub count: u64,
    /// Collection to write to.
    pub collection: String,
    /// How many of the inserted documents to update afterwards.
    pub updates: u64,
    /// How many of the inserted documents to delete afterwards.
    pub deletes: u64,
}

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InsertReport {
    /// Documents inserted.
    pub inserted: u64,
    /// Documents updated.
    pub updated: u64,
    /// Documents deleted.
    pub deleted: u64,
}

/// Above this many operations a progress bar is shown.
const PROGRESS_FROM: u64 = 1000;
/// Documents per `insert_many`.
const BATCH: u64 = 500;

/// Insert `plan.count` documents, then update the first `plan.updates` and delete the last
/// `plan.deletes` of them.
pub async fn run(settings: &MongoSettings, plan: &InsertPlan) -> Result<InsertReport, MongoError> {
    let mongo = Mongo::shared(&settings.mongo_database_host);
    mongo.ping().await?;
    let coll = mongo.client().await?.database(&settings.mongo_database_name).collection::<Document>(&plan.collection);

    let total = plan.count + plan.updates.min(plan.count) + plan.deletes.min(plan.count);
    let bar = if total >= PROGRESS_FROM { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:8} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );

    let run_id = ObjectId::new().to_hex();
    let mut ids = Vec::with_capacity(plan.count as usize);
    let mut report = InsertReport::default();
    bar.set_message("insert");
    let mut seq = 0u64;
    while seq < plan.count {
        let n = BATCH.min(plan.count - seq);
        let docs: Vec<Document> = (seq..seq + n).map(|i| test_document(&run_id, i)).collect();
        let res = coll.insert_many(docs).await?;
        let mut batch: Vec<_> = res.inserted_ids.into_iter().collect();
        batch.sort_by_key(|(i, _)| *i);
        ids.extend(batch.into_iter().map(|(_, id)| id));
        seq += n;
        report.inserted += n;
        bar.inc(n);
    }

    bar.set_message("update");
    for id in ids.iter().take(plan.updates as usize) {
        coll.update_one(doc! {"_id": id}, doc! {"$inc": {"likes": 1}, "$set": {"edited_at": DateTime::now()}}).await?;
        report.updated += 1;
        bar.inc(1);
    }
    bar.set_message("delete");
    for id in ids.iter().rev().take(plan.deletes as usize) {
        coll.delete_one(doc! {"_id": id}).await?;
        report.deleted += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// A post-like document with a few types worth seeing on the wire.
fn test_document(run_id: &str, seq: u64) -> Document {
    doc! {
        "title": format!("test post {seq}"),
        "body": "Lorem ipsum dolor sit amet",
        "author_id": ObjectId::new(),
        "run": run_id,
        "seq": seq as i64,
        "likes": (seq % 7) as i32,
        "score": (seq as f64) / 10.0,
        "published": seq.is_multiple_of(2),
        "tags": ["cdc", "test"],
        "created_at": DateTime::now(),
    }
}
