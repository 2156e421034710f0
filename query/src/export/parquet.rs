//! Rows to Parquet through arrow: Int64, Timestamp(ms, UTC) and UTF-8 columns (JSON as text),
//! zstd-compressed, one row group per flushed batch.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::table::{Cell, ColType, Row, Table};
use super::writer::PartWriter;
use crate::error::{Error, Result};

fn err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("parquet: {e}"))
}

/// The arrow schema of a table.
pub fn schema(table: &Table) -> SchemaRef {
    let fields: Vec<Field> = table
        .columns
        .iter()
        .map(|(name, ty)| {
            let dt = match ty {
                ColType::Int => DataType::Int64,
                ColType::Ts => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                ColType::Str | ColType::Json => DataType::Utf8,
            };
            Field::new(*name, dt, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

pub struct ParquetPart {
    table: &'static Table,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
}

impl ParquetPart {
    pub fn create(table: &'static Table, file: File) -> Result<ParquetPart> {
        let schema = schema(table);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(err)?))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(err)?;
        Ok(ParquetPart {
            table,
            schema,
            writer,
        })
    }

    fn batch(&self, rows: &[Row]) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.table.columns.len());
        for (i, (_, ty)) in self.table.columns.iter().enumerate() {
            let cells = rows.iter().map(|r| r.get(i).unwrap_or(&Cell::Null));
            let array: ArrayRef = match ty {
                ColType::Int => {
                    let mut b = Int64Builder::with_capacity(rows.len());
                    for c in cells {
                        match c {
                            Cell::Int(v) | Cell::Ts(v) => b.append_value(*v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                ColType::Ts => {
                    let mut b =
                        TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                    for c in cells {
                        match c {
                            Cell::Int(v) | Cell::Ts(v) => b.append_value(*v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                ColType::Str | ColType::Json => {
                    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
                    for c in cells {
                        match c {
                            Cell::Str(s) | Cell::Json(s) => b.append_value(s),
                            Cell::Int(v) | Cell::Ts(v) => b.append_value(v.to_string()),
                            Cell::Null => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            arrays.push(array);
        }
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(err)
    }
}

impl PartWriter for ParquetPart {
    fn write_rows(&mut self, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = self.batch(rows)?;
        self.writer.write(&batch).map_err(err)?;
        // One row group per batch keeps memory bounded by the batch size.
        self.writer.flush().map_err(err)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let file = self.writer.into_inner().map_err(err)?;
        file.sync_all()?;
        Ok(())
    }
}
