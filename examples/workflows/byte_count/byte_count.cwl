cwlVersion: v1.2
class: CommandLineTool
doc: Count the bytes of a file (the `cwl` executor's example; see oda-workflow.toml).
baseCommand: [wc, -c]
stdin: $(inputs.data.path)
inputs:
  data:
    type: File
    doc: Any file; an upstream output or a blob.
outputs:
  count:
    type: stdout
stdout: count.txt
