//! A [`Provenance`] as W3C PROV-O triples, written as Turtle or JSON-LD
//! (the `oxrdf` data model and the `oxrdfio` serializers).
//!
//! The mapping (docs/knowledge.md has the vocabulary and example queries):
//! each fact is a `prov:Activity` (also `oda:Run`) associated with the
//! worker that signed it (`prov:wasAssociatedWith`, and a
//! `prov:qualifiedAssociation` whose `prov:hadPlan` is the workflow, a
//! `prov:Plan`); each input and output blob is a `prov:Entity`; inputs are
//! `prov:used` (with a `prov:qualifiedUsage` naming the argument and the
//! input fact), outputs `prov:wasGeneratedBy` the run and
//! `prov:wasAttributedTo` its worker (with a `prov:qualifiedGeneration`
//! naming the output); workers, the experts that endorsed a workflow and
//! the controllers that checked a fact are `prov:Agent`s; times are
//! `xsd:dateTime`. Ids are stable IRIs built from the content ids
//! (`urn:oda-mesh:fact:<hex>` and so on), so exports of different nodes
//! merge. Output is sorted, so the same DAG always gives the same text.

use std::time::{Duration, UNIX_EPOCH};

use oda_protocol::{BlobId, ExprId, FactId, Outcome, PublicKey, Value, WorkflowId};
use oxrdf::vocab::{rdf, rdfs, xsd};
use oxrdf::{Literal, NamedNode, Term, Triple};
use oxrdfio::{JsonLdProfileSet, RdfFormat, RdfSerializer};

use super::{Provenance, Step};
use crate::api::args::value_to_json;
use crate::identity::peer_id_of;

/// The W3C PROV namespace.
pub const PROV: &str = "http://www.w3.org/ns/prov#";
/// ODA mesh's own terms, for what PROV-O lacks.
pub const ODA: &str = "urn:oda-mesh:vocab#";
/// The prefix of every id IRI: `urn:oda-mesh:<kind>:<hex>`.
pub const IDS: &str = "urn:oda-mesh:";

/// The datatype of JSON text literals (RDF 1.1 JSON-LD).
const RDF_JSON: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#JSON";

/// The prefixes the Turtle and JSON-LD texts declare.
const PREFIXES: [(&str, &str); 10] = [
    ("prov", PROV),
    ("oda", ODA),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
    ("fact", "urn:oda-mesh:fact:"),
    ("expr", "urn:oda-mesh:expr:"),
    ("blob", "urn:oda-mesh:blob:"),
    ("workflow", "urn:oda-mesh:workflow:"),
    ("key", "urn:oda-mesh:key:"),
    ("rdf", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"),
];

/// The IRI of a fact (its run).
pub fn fact_iri(id: &FactId) -> NamedNode {
    id_iri("fact", id)
}

/// The IRI of an expression.
pub fn expr_iri(id: &ExprId) -> NamedNode {
    id_iri("expr", id)
}

/// The IRI of a blob (its bytes).
pub fn blob_iri(id: &BlobId) -> NamedNode {
    id_iri("blob", id)
}

/// The IRI of a workflow.
pub fn workflow_iri(id: &WorkflowId) -> NamedNode {
    id_iri("workflow", id)
}

/// The IRI of an agent: a node or person, by public key.
pub fn key_iri(key: &PublicKey) -> NamedNode {
    id_iri("key", key)
}

fn id_iri(kind: &str, id: &impl std::fmt::Display) -> NamedNode {
    // Ids print as lowercase hex: always a valid IRI.
    NamedNode::new_unchecked(format!("{IDS}{kind}:{id}"))
}

fn prov(term: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{PROV}{term}"))
}

fn oda(term: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{ODA}{term}"))
}

/// A node inside another's IRI (`<fact>#usage-0`): stable, no blank nodes.
fn part(of: &NamedNode, what: &str, index: usize) -> NamedNode {
    NamedNode::new_unchecked(format!("{}#{what}-{index}", of.as_str()))
}

fn date_time(unix_ms: u64) -> Literal {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    Literal::new_typed_literal(
        humantime::format_rfc3339_millis(at).to_string(),
        xsd::DATE_TIME,
    )
}

/// Every triple of the DAG, sorted and without repeats.
pub fn triples(p: &Provenance) -> Vec<Triple> {
    let mut out = Triples(Vec::new());
    for step in &p.steps {
        out.step(step);
    }
    for input in &p.missing {
        // Known only by the fact that used it: the run and its output.
        let run = fact_iri(&input.fact);
        out.add(&run, rdf::TYPE.into_owned(), prov("Activity"));
        out.add(&run, oda("expression"), expr_iri(&input.expr));
        out.add(&run, oda("signedBy"), key_iri(&input.signer));
        out.agent(&input.signer);
        let blob = blob_iri(&input.blob);
        out.add(&blob, rdf::TYPE.into_owned(), prov("Entity"));
        out.add(&blob, prov("wasGeneratedBy"), run);
    }
    let mut triples = out.0;
    triples.sort_by_cached_key(|t| t.to_string());
    triples.dedup();
    triples
}

/// The DAG as Turtle.
pub fn turtle(p: &Provenance) -> String {
    write(p, RdfFormat::Turtle)
}

/// The DAG as JSON-LD (expanded: an array of node objects with full IRIs).
pub fn json_ld(p: &Provenance) -> String {
    write(
        p,
        RdfFormat::JsonLd {
            profile: JsonLdProfileSet::empty(),
        },
    )
}

fn write(p: &Provenance, format: RdfFormat) -> String {
    let mut serializer = RdfSerializer::from_format(format);
    for (name, iri) in PREFIXES {
        serializer = serializer
            .with_prefix(name, iri)
            .expect("the prefixes are valid IRIs");
    }
    let mut writer = serializer.for_writer(Vec::new());
    for t in triples(p) {
        writer
            .serialize_triple(&t)
            .expect("writing to a Vec does not fail");
    }
    let bytes = writer.finish().expect("writing to a Vec does not fail");
    String::from_utf8(bytes).expect("Turtle and JSON-LD are UTF-8")
}

struct Triples(Vec<Triple>);

impl Triples {
    fn add(&mut self, s: &NamedNode, p: NamedNode, o: impl Into<Term>) {
        self.0.push(Triple::new(s.clone(), p, o));
    }

    fn agent(&mut self, key: &PublicKey) {
        let agent = key_iri(key);
        self.add(&agent, rdf::TYPE.into_owned(), prov("Agent"));
        self.add(&agent, oda("publicKey"), Literal::from(key.to_string()));
        if let Some(peer) = peer_id_of(key) {
            self.add(&agent, oda("peerId"), Literal::from(peer.to_string()));
        }
    }

    fn step(&mut self, step: &Step) {
        let f = &step.fact.body;
        let run = fact_iri(&step.fact.id());
        let worker = key_iri(&f.worker);
        let plan = workflow_iri(&f.workflow);
        let expr = expr_iri(&f.expr);
        let ty = || rdf::TYPE.into_owned();

        self.add(&run, ty(), prov("Activity"));
        self.add(&run, ty(), oda("Run"));
        self.add(&run, oda("expression"), expr.clone());
        self.add(
            &run,
            oda("runnerClass"),
            Literal::from(f.runner_class.name()),
        );
        self.add(&run, prov("startedAtTime"), date_time(f.started_at));
        self.add(&run, prov("endedAtTime"), date_time(f.finished_at));
        self.add(&run, oda("cpuMilliseconds"), Literal::from(f.usage.cpu_ms));
        self.add(
            &run,
            oda("peakRssKibibytes"),
            Literal::from(f.usage.peak_rss_kib),
        );
        self.add(&run, oda("trusted"), Literal::from(step.verdict.trusted));
        self.add(
            &run,
            oda("trustReason"),
            Literal::from(step.verdict.why.clone()),
        );
        self.add(&run, oda("signedBy"), worker.clone());
        self.add(&run, prov("wasAssociatedWith"), worker.clone());
        let association = part(&run, "association", 0);
        self.add(&run, prov("qualifiedAssociation"), association.clone());
        self.add(&association, ty(), prov("Association"));
        self.add(&association, prov("agent"), worker.clone());
        self.add(&association, prov("hadPlan"), plan.clone());
        self.agent(&f.worker);
        self.add(&worker, ty(), prov("SoftwareAgent"));
        for (keys, property) in [
            (&step.endorsed_by, "endorsedBy"),
            (&step.disputed_by, "disputedBy"),
        ] {
            for key in keys {
                self.add(&run, oda(property), key_iri(key));
                self.agent(key);
            }
        }

        self.add(&plan, ty(), prov("Plan"));
        self.add(&plan, ty(), prov("Entity"));
        self.add(&plan, ty(), oda("Workflow"));
        if let Some(m) = &step.workflow {
            self.add(
                &plan,
                rdfs::LABEL.into_owned(),
                Literal::from(m.name.clone()),
            );
            self.add(&plan, oda("version"), Literal::from(m.version.clone()));
        }
        for expert in &step.workflow_endorsed_by {
            self.add(&plan, oda("endorsedBy"), key_iri(expert));
            self.agent(expert);
        }

        self.add(&expr, ty(), oda("Expression"));
        self.add(&expr, oda("workflow"), plan);
        if let Some(e) = &step.expression {
            for (i, (name, value)) in e.args.iter().enumerate() {
                let arg = part(&expr, "argument", i);
                self.add(&expr, oda("argument"), arg.clone());
                self.add(&arg, ty(), oda("Argument"));
                self.add(&arg, oda("name"), Literal::from(name.clone()));
                self.value(&arg, value);
            }
        }

        match &f.outcome {
            Outcome::Success { outputs } => {
                self.add(&run, oda("outcome"), Literal::from("success"));
                for (i, (name, output)) in outputs.iter().enumerate() {
                    let blob = blob_iri(&output.blob);
                    self.add(&blob, ty(), prov("Entity"));
                    self.add(&blob, ty(), oda("Blob"));
                    self.add(&blob, oda("size"), Literal::from(output.size));
                    self.add(&blob, prov("wasGeneratedBy"), run.clone());
                    self.add(&blob, prov("wasAttributedTo"), worker.clone());
                    let generation = part(&run, "output", i);
                    self.add(&blob, prov("qualifiedGeneration"), generation.clone());
                    self.add(&generation, ty(), prov("Generation"));
                    self.add(&generation, prov("activity"), run.clone());
                    self.add(&generation, oda("outputName"), Literal::from(name.clone()));
                    for input in &f.inputs {
                        self.add(&blob, prov("wasDerivedFrom"), blob_iri(&input.blob));
                    }
                }
            }
            Outcome::AnalysisError { kind, message } => {
                self.add(&run, oda("outcome"), Literal::from("analysis-error"));
                self.add(&run, oda("errorKind"), Literal::from(kind.clone()));
                self.add(&run, oda("errorMessage"), Literal::from(message.clone()));
            }
        }

        for (i, input) in f.inputs.iter().enumerate() {
            let blob = blob_iri(&input.blob);
            let upstream = fact_iri(&input.fact);
            self.add(&blob, ty(), prov("Entity"));
            self.add(&run, prov("used"), blob.clone());
            self.add(&run, prov("wasInformedBy"), upstream.clone());
            let usage = part(&run, "usage", i);
            self.add(&run, prov("qualifiedUsage"), usage.clone());
            self.add(&usage, ty(), prov("Usage"));
            self.add(&usage, prov("entity"), blob);
            self.add(&usage, oda("inputFact"), upstream);
            self.add(&usage, oda("outputName"), Literal::from(input.name.clone()));
            if let Some(argument) = step.argument_of(input) {
                self.add(&usage, oda("argumentName"), Literal::from(argument));
            }
        }
    }

    /// An argument's value: literals for scalars, the blob's IRI, the
    /// upstream expression and output name for an `Output`, JSON text
    /// (`rdf:JSON`) for null and lists.
    fn value(&mut self, arg: &NamedNode, value: &Value) {
        let literal = match value {
            Value::Bool(b) => Literal::from(*b),
            Value::Int(i) => Literal::from(*i),
            Value::Float(x) => Literal::from(*x),
            Value::Str(s) => Literal::from(s.clone()),
            Value::Blob(b) => {
                self.add(arg, oda("value"), blob_iri(b));
                return;
            }
            Value::Output { expr, name } => {
                self.add(arg, oda("outputOf"), expr_iri(expr));
                self.add(arg, oda("outputName"), Literal::from(name.clone()));
                return;
            }
            Value::Null | Value::List(_) => Literal::new_typed_literal(
                value_to_json(value).to_string(),
                NamedNode::new_unchecked(RDF_JSON),
            ),
        };
        self.add(arg, oda("value"), literal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::trust::Verdict;
    use crate::store::{Store, StoreConfig};
    use crate::test_facts::fact;
    use oda_protocol::SecretKey;

    /// A two-step DAG (`events` by A, `top` by B from it) traced from a store.
    fn dag() -> (Provenance, Vec<oda_protocol::SignedFact>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::new(dir.path().join("s"), 1 << 20)).unwrap();
        let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let events = fact(&a, 1, &[]);
        let top = fact(&b, 2, &[&events]);
        store.put_fact(&events).unwrap();
        let p = super::super::trace(&store, vec![top.clone()], |f| Verdict {
            trusted: f.body.worker == b.public(),
            why: "test".into(),
        })
        .unwrap();
        (p, vec![events, top], dir)
    }

    fn has(triples: &[Triple], s: &NamedNode, p: NamedNode, o: impl Into<Term>) -> bool {
        let wanted = Triple::new(s.clone(), p, o);
        triples.contains(&wanted)
    }

    #[test]
    fn a_dag_maps_to_prov_o() {
        let (p, facts, _dir) = dag();
        let [events, top] = [&facts[0], &facts[1]];
        let t = triples(&p);
        let run = fact_iri(&top.id());
        let worker = key_iri(&top.body.worker);
        let input = blob_iri(&events.body.output_blobs()[0]);
        let output = blob_iri(&top.body.output_blobs()[0]);
        assert!(has(&t, &run, rdf::TYPE.into_owned(), prov("Activity")));
        assert!(has(&t, &run, prov("wasAssociatedWith"), worker.clone()));
        assert!(has(&t, &run, prov("used"), input.clone()));
        assert!(has(&t, &run, prov("wasInformedBy"), fact_iri(&events.id())));
        assert!(has(&t, &output, prov("wasGeneratedBy"), run.clone()));
        assert!(has(&t, &output, prov("wasAttributedTo"), worker.clone()));
        assert!(has(&t, &output, prov("wasDerivedFrom"), input));
        assert!(has(&t, &worker, rdf::TYPE.into_owned(), prov("Agent")));
        let association = part(&run, "association", 0);
        assert!(has(
            &t,
            &association,
            prov("hadPlan"),
            workflow_iri(&top.body.workflow)
        ));
        // Times are typed, and the verdict of each step is kept.
        assert!(has(&t, &run, prov("startedAtTime"), date_time(1)));
        assert!(has(&t, &run, oda("trusted"), Literal::from(true)));
        assert!(has(
            &t,
            &fact_iri(&events.id()),
            oda("trusted"),
            Literal::from(false)
        ));
        assert_eq!(
            date_time(1_764_872_529_123).value(),
            "2025-12-04T18:22:09.123Z"
        );
    }

    #[test]
    fn turtle_and_json_ld_parse_back_to_the_same_triples() {
        let (p, _, _dir) = dag();
        let expected = triples(&p);
        let text = turtle(&p);
        assert!(
            text.contains("@prefix prov: <http://www.w3.org/ns/prov#>"),
            "{text}"
        );
        let parse = |format: RdfFormat, text: &str| -> Vec<Triple> {
            let mut triples: Vec<Triple> = oxrdfio::RdfParser::from_format(format)
                .for_slice(text)
                .map(|q| q.map(Triple::from))
                .collect::<Result<_, _>>()
                .unwrap();
            triples.sort_by_cached_key(|t| t.to_string());
            triples
        };
        let from_turtle = parse(RdfFormat::Turtle, &text);
        assert_eq!(from_turtle, expected);
        let json_ld_format = RdfFormat::JsonLd {
            profile: JsonLdProfileSet::empty(),
        };
        assert_eq!(parse(json_ld_format, &json_ld(&p)), expected);
        // Deterministic: the same DAG gives the same text.
        assert_eq!(turtle(&p), text);
    }
}
