//! `sample-callback`: a signed sample callback as a curl command.

use crate::config::Config;
use crate::ingest::signature;

pub fn run(cfg: &Config, url: Option<String>) -> anyhow::Result<()> {
    let target = url.unwrap_or_else(|| {
        format!(
            "http://{}/ingress",
            cfg.server.listen.replace("0.0.0.0", "127.0.0.1")
        )
    });
    let now = chrono::Utc::now();
    let ms = now.timestamp_millis();
    let params: Vec<(String, String)> = [
        ("EventType", "task.created".to_owned()),
        ("Sid", format!("EV{:032x}", ms)),
        ("AccountSid", cfg.twilio.account_sid.clone()),
        ("WorkspaceSid", cfg.twilio.workspace_sid.clone()),
        ("ResourceType", "task".to_owned()),
        ("ResourceSid", format!("WT{:032x}", ms)),
        ("TaskSid", format!("WT{:032x}", ms)),
        ("TaskAssignmentStatus", "pending".to_owned()),
        ("TaskAge", "0".to_owned()),
        ("TaskChannelUniqueName", "voice".to_owned()),
        ("TaskQueueName", "Support".to_owned()),
        ("TaskQueueSid", format!("WQ{:032x}", 1)),
        ("TaskAttributes", r#"{"direction":"inbound"}"#.to_owned()),
        ("TaskDateCreated", (ms / 1000).to_string()),
        ("Timestamp", (ms / 1000).to_string()),
        ("TimestampMs", ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let path = target
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap_or_else(|| "/ingress".into());
    let signed_url = format!("{}{}", cfg.server.public_url.trim_end_matches('/'), path);
    let sig = signature::compute(cfg.twilio.auth_token.expose(), &signed_url, &params);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    println!(
        "curl -i -X POST '{target}' -H 'X-Twilio-Signature: {sig}' \
                 -H 'Content-Type: application/x-www-form-urlencoded' --data '{body}'"
    );
    Ok(())
}
