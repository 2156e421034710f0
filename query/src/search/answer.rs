//! Answering a search: parse the query, add the filters, rank, cut snippets.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::QueryParserError;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Term, Type, Value as _};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Index, IndexReader, Order, ReloadPolicy, Searcher, TantivyDocument};

use ledger::project::Status;
use ledger::render::rfc3339;
use ledger::Ledger;

use super::doc::{self, Fields, Parts};
use super::index::{index_dir, payload_seq, prepare};
use super::tokenizer;
use crate::{Error, Result};

/// Characters of text a snippet shows at most.
pub const SNIPPET_CHARS: usize = 160;

/// A search: the query and its filters.
///
/// # Defaults
/// No filters, `limit` 20, `offset` 0.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// tantivy query syntax: words (all must match), `"a phrase"`, `field:value`,
    /// `input.where.name:Task-00001`, `OR`, `-word`, `(…)`. Empty: every run.
    pub query: String,
    pub operation: Option<String>,
    pub doctype: Option<String>,
    pub status: Option<Status>,
    /// The run's template or flow.
    pub template: Option<String>,
    pub owner: Option<String>,
    pub agent: Option<String>,
    /// Runs that started at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Runs that started at or before this time (ms).
    pub until_ms: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            query: String::new(),
            operation: None,
            doctype: None,
            status: None,
            template: None,
            owner: None,
            agent: None,
            since_ms: None,
            until_ms: None,
            limit: 20,
            offset: 0,
        }
    }
}

impl SearchRequest {
    /// A request for `query` with the defaults.
    pub fn new(query: impl Into<String>) -> Self {
        SearchRequest {
            query: query.into(),
            ..SearchRequest::default()
        }
    }
}

/// The reader of this process (one index at a time), reloaded before each search.
struct ReaderSlot {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
}

static READER: Mutex<Option<ReaderSlot>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forgets the cached reader (the index is being replaced).
pub(super) fn forget_reader() {
    *lock(&READER) = None;
}

/// `read_only`: the ledger is on media this process cannot write (see
/// [`ledger::Ledger::cannot_write`]).
fn open_searcher(dir: &Path, read_only: bool) -> Result<(Index, Searcher)> {
    let mut slot = lock(&READER);
    if let Some(s) = slot.as_ref() {
        if s.dir == dir && s.reader.reload().is_ok() {
            return Ok((s.index.clone(), s.reader.searcher()));
        }
    }
    *slot = None;
    if !dir.join("meta.json").exists() {
        return Err(Error::Index(format!(
            "{}: no search index yet (the process that writes the ledger builds it; or run \
             `runledger rebuild`)",
            dir.display()
        )));
    }
    let opened = if read_only {
        tantivy::directory::MmapDirectory::open(dir)
            .map_err(tantivy::TantivyError::from)
            .and_then(|d| Index::open(super::read_only_dir::ReadOnlyDir(d)))
    } else {
        Index::open_in_dir(dir)
    };
    let index = opened.map_err(|e| Error::Index(format!("{}: {e}", dir.display())))?;
    let (schema, _) = doc::schema();
    if index.schema() != schema {
        return Err(Error::Index(format!(
            "{}: the search index was built by another version of runledger (run `runledger \
             rebuild`)",
            dir.display()
        )));
    }
    prepare(&index);
    let reader: IndexReader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(|e| {
            Error::Index(format!(
                "{}: {e} (run `runledger rebuild` to build the index again)",
                dir.display()
            ))
        })?;
    let searcher = reader.searcher();
    *slot = Some(ReaderSlot {
        dir: dir.to_path_buf(),
        index: index.clone(),
        reader,
    });
    Ok((index, searcher))
}

fn is_match_all(q: &str) -> bool {
    q.trim().is_empty() || q.trim() == "*"
}

/// Parses `q` (empty or `*`: every run). Words must all match unless joined by `OR`.
///
/// # Errors
/// [`Error::BadQuery`] naming what is wrong with the query.
pub fn parse_query(index: &Index, fields: &Fields, q: &str) -> Result<Box<dyn Query>> {
    if is_match_all(q) {
        return Ok(Box::new(AllQuery));
    }
    if nesting(q) > MAX_NESTING {
        let shown: String = q.chars().take(80).collect();
        return Err(Error::BadQuery(format!(
            "bad query {shown:?}…: parentheses nest deeper than {MAX_NESTING} levels"
        )));
    }
    let mut parser = QueryParser::for_index(index, vec![fields.text]);
    parser.set_conjunction_by_default();
    parser.parse_query(q).map_err(|e| bad_query(q, e))
}

/// Levels of parentheses a query may nest. tantivy's parser, and the query it builds, recurse
/// once per level: 4,000 levels overflowed the stack, and under `serve` one request ended the
/// server.
const MAX_NESTING: usize = 32;

/// How deep `q`'s parentheses nest, outside quoted phrases and past backslash escapes.
fn nesting(q: &str) -> usize {
    let (mut depth, mut deepest, mut quoted, mut escaped) = (0usize, 0, false, false);
    for c in q.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn bad_query(q: &str, e: QueryParserError) -> Error {
    let why = match e {
        QueryParserError::FieldDoesNotExist(f) => format!(
            "there is no field {f:?} (fields: {}; JSON paths go under input, output, error, data, \
             before, resumed or extra, e.g. input.where.name:Task-00001; put text with a ':' in \
             double quotes)",
            doc::FIELD_NAMES.join(", ")
        ),
        QueryParserError::SyntaxError(s) => format!(
            "syntax error{} (check quotes, parentheses, brackets and that a ':' follows a field \
             name)",
            if s.is_empty() {
                String::new()
            } else {
                format!(" at {s:?}")
            }
        ),
        QueryParserError::AllButQueryForbidden => {
            "only excluded terms: say what to search for besides the `-term`s".into()
        }
        QueryParserError::ExpectedInt(e) => {
            format!("a whole number was expected ({e}); `started` takes ms since the Unix epoch")
        }
        QueryParserError::ExpectedFloat(e) => format!("a number was expected ({e})"),
        QueryParserError::ExpectedBool(e) => format!("true or false was expected ({e})"),
        other => other.to_string(),
    };
    Error::BadQuery(format!("bad query {q:?}: {why}"))
}

fn term_filter(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

fn with_filters(query: Box<dyn Query>, f: &Fields, req: &SearchRequest) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, query)];
    let strings = [
        (f.operation, &req.operation),
        (f.doctype, &req.doctype),
        (f.template, &req.template),
        (f.owner, &req.owner),
        (f.agent, &req.agent),
    ];
    for (field, want) in strings {
        if let Some(w) = want {
            clauses.push((Occur::Must, term_filter(field, w)));
        }
    }
    if let Some(s) = req.status {
        clauses.push((Occur::Must, term_filter(f.status, s.as_str())));
    }
    if req.since_ms.is_some() || req.until_ms.is_some() {
        let bound = |v: Option<i64>| match v {
            Some(ms) => Bound::Included(Term::from_field_i64(f.started, ms)),
            None => Bound::Unbounded,
        };
        clauses.push((
            Occur::Must,
            Box::new(RangeQuery::new(bound(req.since_ms), bound(req.until_ms))),
        ));
    }
    if clauses.len() == 1 {
        return clauses.remove(0).1;
    }
    Box::new(BooleanQuery::new(clauses))
}

/// The text a term of a text or JSON field matches (`None` for other terms).
fn term_text(t: &Term) -> Option<String> {
    let v = t.value();
    match v.typ() {
        Type::Str => v.as_str().map(str::to_owned),
        Type::Json => {
            let bytes = t.serialized_value_bytes();
            let end = bytes.iter().position(|b| *b == 0)?;
            let rest = &bytes[end + 1..];
            let (code, text) = rest.split_first()?;
            if Type::from_code(*code) != Some(Type::Str) {
                return None;
            }
            std::str::from_utf8(text).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// A snippet generator for the `text` field highlighting the query's text terms, whichever
/// field (text or a JSON path) they were asked of.
fn snippets(searcher: &Searcher, query: &dyn Query, f: &Fields) -> Result<SnippetGenerator> {
    let fields = f.text_fields();
    let mut terms: Vec<Term> = Vec::new();
    query.query_terms(&mut |t, _| {
        if fields.contains(&t.field()) {
            terms.push(t.clone());
        }
    });
    let mut texts: BTreeMap<String, f32> = BTreeMap::new();
    for t in &terms {
        let Some(text) = term_text(t) else { continue };
        let df = searcher.doc_freq(t)?;
        if df > 0 {
            let score = 1.0 / (1.0 + df as f32);
            let e = texts.entry(text).or_insert(0.0);
            *e = e.max(score);
        }
    }
    Ok(SnippetGenerator::new(
        texts,
        tokenizer::analyzer(),
        f.text,
        SNIPPET_CHARS,
    ))
}

/// The last seq the index's newest commit holds.
fn index_seq(index: &Index) -> Option<u64> {
    index
        .load_metas()
        .ok()
        .map(|m| payload_seq(m.payload.as_deref()))
}

/// Byte ranges of `s` as character ranges, sorted, overlapping ones (bigrams) merged.
fn char_ranges(s: &str, ranges: &[std::ops::Range<usize>]) -> Vec<[usize; 2]> {
    let at = |b: usize| s.get(..b).map_or(0, |p| p.chars().count());
    let mut rs: Vec<[usize; 2]> = ranges.iter().map(|r| [at(r.start), at(r.end)]).collect();
    rs.sort_unstable();
    let mut out: Vec<[usize; 2]> = Vec::with_capacity(rs.len());
    for r in rs {
        match out.last_mut() {
            Some(last) if r[0] <= last[1] => last[1] = last[1].max(r[1]),
            _ => out.push(r),
        }
    }
    out
}

/// Runs a search over the ledger's index. JSON: `{"query","total","offset","limit",
/// "indexed_seq","hits":[{"run_id","operation","doctype","template","owner","status",
/// "started_at","score","snippet","highlights":[[from,to] in chars of snippet]}]}`; hits are
/// ranked by BM25 score, one per run (an empty query lists the runs newest first).
///
/// The status and fields shown are the run's current ones; filters apply to what the index
/// holds (current as of `indexed_seq`).
///
/// # Errors
/// [`Error::BadQuery`] for a malformed query; [`Error::Index`] when there is no index.
pub fn search(ledger: &Ledger, req: &SearchRequest) -> Result<Value> {
    let dir = index_dir(ledger.path());
    let (index, searcher) = open_searcher(&dir, ledger.cannot_write().is_some())?;
    let (_, fields) = doc::schema();
    let query = parse_query(&index, &fields, &req.query)?;
    let snippet_gen = snippets(&searcher, query.as_ref(), &fields)?;
    let filtered = with_filters(query, &fields, req);
    let list_all = is_match_all(&req.query);
    // Never ask for more than there is (a huge --limit must not size a huge heap).
    let docs = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
    let limit = req.limit.min(docs);
    // What the parser accepts but the search refuses (a range over a JSON path) is the query's
    // fault too.
    let refused = |e: tantivy::TantivyError| match e {
        tantivy::TantivyError::InvalidArgument(m) => Error::BadQuery(format!(
            "bad query {:?}: {m} (ranges `[a TO b]`, `>a` work on `started` only)",
            req.query
        )),
        other => other.into(),
    };
    let (top, total): (Vec<(f32, DocAddress)>, usize) = if limit == 0 || req.offset >= docs {
        (
            Vec::new(),
            searcher
                .search(filtered.as_ref(), &Count)
                .map_err(refused)?,
        )
    } else if list_all {
        // Nothing to rank by: newest first, as `runs` lists.
        let top = TopDocs::with_limit(limit)
            .and_offset(req.offset)
            .order_by_fast_field::<i64>("started", Order::Desc);
        let (docs, total) = searcher
            .search(filtered.as_ref(), &(top, Count))
            .map_err(refused)?;
        (docs.into_iter().map(|(_, a)| (1.0, a)).collect(), total)
    } else {
        let top = TopDocs::with_limit(limit)
            .and_offset(req.offset)
            .order_by_score();
        searcher
            .search(filtered.as_ref(), &(top, Count))
            .map_err(refused)?
    };
    let view = ledger.view(None)?;
    let mut hits = Vec::with_capacity(top.len());
    for (score, addr) in top {
        let stored: TantivyDocument = searcher.doc(addr)?;
        let Some(run_id) = stored
            .get_first(fields.run_id)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let Some(st) = view.run(&run_id)? else {
            // Indexed from a log this view does not see yet (cannot happen for one process).
            hits.push(json!({"run_id": run_id, "score": score}));
            continue;
        };
        let text = doc::run_text(&st, &Parts::of_run(&view, &run_id)?);
        let snip = snippet_gen.snippet(&text);
        let (fragment, highlights) = if snip.is_empty() {
            // No text term matched (a filter-only or JSON-number query): the text's start.
            let start = doc::clip_str(&text, SNIPPET_CHARS * 4);
            let start: String = start.chars().take(SNIPPET_CHARS).collect();
            (start, Vec::new())
        } else {
            let f = snip.fragment().to_owned();
            let h = char_ranges(&f, snip.highlighted());
            (f, h)
        };
        hits.push(json!({
            "run_id": run_id,
            "operation": st.fields.operation,
            "doctype": st.fields.doctype,
            "template": st.fields.template.as_ref().or(st.fields.flow.as_ref()),
            "owner": st.fields.owner,
            "status": st.status().as_str(),
            "started_at": st.started_ms.map(rfc3339),
            "score": score,
            "snippet": fragment.trim_end(),
            "highlights": highlights,
        }));
    }
    Ok(json!({
        "query": req.query,
        "total": total,
        "offset": req.offset,
        "limit": req.limit,
        "indexed_seq": index_seq(&index),
        "hits": hits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ranges_count_characters() {
        let s = "請求書 invoice";
        let b = s.find("invoice").unwrap_or(0);
        assert_eq!(char_ranges(s, &[0..6, b..b + 7]), vec![[0, 2], [4, 11]]);
        assert_eq!(char_ranges(s, &[3..9, 0..6]), vec![[0, 3]]);
    }

    #[test]
    fn nesting_counts_parentheses_outside_phrases_and_escapes() {
        assert_eq!(nesting("a b"), 0);
        assert_eq!(nesting("(a OR (b AND c)) (d)"), 2);
        assert_eq!(nesting(r#""((((" (a)"#), 1);
        assert_eq!(nesting(r"\(\(\( (a)"), 1);
        assert_eq!(nesting(")))((("), 3);
    }
}
