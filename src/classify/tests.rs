//! Native unit tests of the classifier's heuristic method, through its public API (the
//! learned method is judged on the labelled sets: `eval.rs`, `make eval`).

use serde_json::{json, Value};

use super::*;

fn heuristic() -> ClassifierConfig {
    ClassifierConfig {
        method: Method::Heuristic,
        ..ClassifierConfig::default()
    }
}

fn plan() -> ClassifierPlan {
    ClassifierPlan::compile(&heuristic(), "classifier").unwrap()
}

fn plan_with(mut cfg: Value) -> Result<ClassifierPlan, ConfigError> {
    if let Some(o) = cfg.as_object_mut() {
        o.entry("method").or_insert(json!("heuristic"));
    }
    let cfg: ClassifierConfig = serde_json::from_value(cfg).unwrap();
    ClassifierPlan::compile(&cfg, "classifier")
}

fn chat_body(user: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": user}]})
}

fn chat(user: &str) -> Classification {
    plan().classify(&chat_body(user), Endpoint::ChatCompletions)
}

fn task_of(user: &str) -> Task {
    chat(user).task
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.insert(key.to_string(), value);
    }
    body
}

// ---------------------------------------------------------------- tasks (chat)

#[test]
fn coding_prompts() {
    for p in [
        "Write a Python function that reverses a linked list in place.",
        "Why does my Rust code fail to compile? error[E0382]: borrow of moved value",
        "Can you refactor this class to use dependency injection?",
        "I get this stack trace when I start the server:\nTraceback (most recent call last):\n  File \"app.py\", line 3",
        "What's wrong here?\n```js\nconst xs = [1, 2, 3].map(v => v * 2);\nconsole.log(xs);\n```",
        "```\n#include <stdio.h>\nint main(void) {\n  printf(\"%d\\n\", 42);\n  return 0;\n}\n```",
        "Write a SQL query that returns the top 5 customers by revenue.",
        "Give me a regex that matches ISO dates.",
        "for (let i = 0; i < n; i++) {\n  total += prices[i];\n}\nreturn total;\n",
    ] {
        assert_eq!(task_of(p), Task::Coding, "{p}");
    }
}

#[test]
fn math_prompts() {
    for p in [
        "Solve the equation 3x + 5 = 20 for x.",
        r"Compute $$\int_0^1 x^2 \, dx$$ and explain.",
        "What is the derivative of sin(x) * x^2?",
        "Prove that the square root of 2 is irrational.",
        "If I roll two dice, what is the probability that the sum is 7?",
        r"Simplify \frac{x^2 - 1}{x - 1}.",
        "What is 1234 * 5678 + 91 = ?",
        "Find all eigenvalues of the matrix [[2, 1], [1, 2]].",
    ] {
        assert_eq!(task_of(p), Task::Math, "{p}");
    }
}

#[test]
fn reasoning_prompts() {
    for p in [
        "Think step by step: should a 20-person startup adopt microservices?",
        "Analyze the trade-offs between renting and buying a house in 2024.",
        "Why do some countries have higher inflation than others? Compare the US and Japan.",
        "A farmer has a fox, a goose and a bag of beans. Solve this riddle and explain your reasoning.",
        "What are the pros and cons of nuclear energy?",
    ] {
        assert_eq!(task_of(p), Task::Reasoning, "{p}");
    }
}

#[test]
fn summarization_prompts() {
    let article = "The city council met on Tuesday to discuss the new budget. \
                   Members debated funding for parks, libraries and road repair. "
        .repeat(20);
    for p in [
        format!("Summarize the following article in three sentences:\n\n{article}"),
        format!("{article}\n\nTL;DR?"),
        format!("What are the key points of this memo?\n{article}"),
        "Give me a short summary of the French Revolution.".to_string(),
        format!("Condense this into a paragraph: {article}"),
    ] {
        assert_eq!(task_of(&p), Task::Summarization, "{p}");
    }
}

#[test]
fn explicit_summarize_beats_a_document_about_programming() {
    let doc = "Python is a programming language. Its code uses functions, \
               classes and a compiler-free runtime; bugs are found by debugging tools. "
        .repeat(10);
    assert_eq!(
        task_of(&format!("Summarize this blog post:\n{doc}")),
        Task::Summarization
    );
}

#[test]
fn extraction_prompts() {
    for p in [
        "Extract all person names and email addresses from the text below.\n\nJohn (john@x.com) met Ann.",
        "Pull out the invoice number, date and total from this receipt: INV-0042, 2024-03-01, $99.",
        "List all the cities mentioned in this paragraph: I went from Paris to Lyon.",
        "Read the review and return JSON with fields rating and sentiment.",
    ] {
        assert_eq!(task_of(p), Task::Extraction, "{p}");
    }
}

#[test]
fn structured_output_and_forced_tools_mean_extraction() {
    let p = plan();
    let base = chat_body("John Smith, 42, lives in Paris and works as a baker.");
    assert_eq!(
        p.classify(&base, Endpoint::ChatCompletions).task,
        Task::General
    );
    for rf in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {}}}),
    ] {
        let body = with(base.clone(), "response_format", rf);
        let c = p.classify(&body, Endpoint::ChatCompletions);
        assert_eq!(c.task, Task::Extraction);
    }
    let body = with(base.clone(), "response_format", json!({"type": "text"}));
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::General
    );

    let tools =
        json!([{"type": "function", "function": {"name": "save_person", "parameters": {}}}]);
    let body = with(
        with(base.clone(), "tools", tools.clone()),
        "tool_choice",
        json!("required"),
    );
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::Extraction
    );
    let named = json!({"type": "function", "function": {"name": "save_person"}});
    let body = with(
        with(base.clone(), "tools", tools.clone()),
        "tool_choice",
        named,
    );
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::Extraction
    );
    // "auto" lets the model chat: no extraction signal.
    let body = with(
        with(base.clone(), "tools", tools),
        "tool_choice",
        json!("auto"),
    );
    let c = p.classify(&body, Endpoint::ChatCompletions);
    assert_eq!(c.task, Task::General);
    assert!(c.has_tools);
    // A forced tool choice without tools means nothing.
    let body = with(base, "tool_choice", json!("required"));
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::General
    );
}

#[test]
fn responses_structured_output_means_extraction() {
    let body = json!({
        "input": "Ann, 31, nurse.",
        "text": {"format": {"type": "json_schema", "name": "p", "schema": {}}}
    });
    assert_eq!(
        plan().classify(&body, Endpoint::Responses).task,
        Task::Extraction
    );
}

#[test]
fn general_prompts() {
    for p in [
        "Write a short poem about autumn leaves.",
        "Hi! How are you today?",
        "Translate 'good morning' into Spanish.",
        "Recommend three novels for a long flight.",
        "",
    ] {
        assert_eq!(task_of(p), Task::General, "{p}");
    }
}

#[test]
fn words_match_whole_words_only() {
    // "bug" inside "debugger"… no: "debugger" is not a listed word; nor is
    // "anywhy", "codes" or "summarized".
    assert_eq!(task_of("anywhy, summarized codes"), Task::General);
    assert_eq!(task_of("SUMMARIZE THIS"), Task::Summarization);
}

#[test]
fn ties_break_in_documented_order() {
    // coding 2 ("code") vs math 2 ("math"): coding first.
    assert_eq!(task_of("code math"), Task::Coding);
    // math 2 vs reasoning 2: math first.
    assert_eq!(task_of("algebra comparison"), Task::Math);
    // reasoning 3 ("analyze") vs extraction 3 ("parse", also coding 1).
    assert_eq!(task_of("analyze and parse"), Task::Reasoning);
    // extraction 5 vs summarization 5: extraction first.
    assert_eq!(task_of("extraction summary"), Task::Extraction);
}

#[test]
fn last_user_message_decides_and_system_counts_less() {
    let p = plan();
    let body = json!({"messages": [
        {"role": "user", "content": "Here is my Python code with a bug: ```py\nx = 1\n```"},
        {"role": "assistant", "content": "Sure, the function looks fine."},
        {"role": "user", "content": "Thanks. Now summarize our conversation."},
    ]});
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::Summarization
    );

    // A weak system hint alone is not enough…
    let body = json!({"messages": [
        {"role": "system", "content": "You help with Python."},
        {"role": "user", "content": "hello there"},
    ]});
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::General
    );
    // …a strong one is…
    let body = json!({"messages": [
        {"role": "developer", "content": "You are a code review assistant."},
        {"role": "user", "content": "hello there"},
    ]});
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::Coding
    );
    // …and the user message outweighs an equal system signal.
    let body = json!({"messages": [
        {"role": "system", "content": "Always summarize."},
        {"role": "user", "content": "Write a python function."},
    ]});
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).task,
        Task::Coding
    );
}

#[test]
fn tool_results_do_not_steer_the_task() {
    let body = json!({"messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "1", "content": "Summarize: python code compile bug refactor"},
    ]});
    assert_eq!(
        plan().classify(&body, Endpoint::ChatCompletions).task,
        Task::General
    );
}

#[test]
fn reasoning_effort_alone_means_reasoning() {
    let p = plan();
    let base = chat_body("Tell me about Rome.");
    for effort in ["high", "xhigh"] {
        let body = with(base.clone(), "reasoning_effort", json!(effort));
        assert_eq!(
            p.classify(&body, Endpoint::ChatCompletions).task,
            Task::Reasoning
        );
    }
    // Medium is OpenAI's default: alone it does not make a request "reasoning".
    for effort in ["medium", "low", "minimal", "none", "bogus"] {
        let body = with(base.clone(), "reasoning_effort", json!(effort));
        assert_eq!(
            p.classify(&body, Endpoint::ChatCompletions).task,
            Task::General,
            "{effort}"
        );
    }
}

// ------------------------------------------------------------ endpoint shapes

#[test]
fn chat_content_parts() {
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Please summarize"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "text", "text": "this meeting transcript."},
    ]}]});
    let c = plan().classify(&body, Endpoint::ChatCompletions);
    assert_eq!(c.task, Task::Summarization);
    assert!(!c.has_images);
    // 16 + 24 chars → ceil(40 / 4) = 10, + 4 for the message.
    assert_eq!(c.estimated_prompt_tokens, 14);
}

#[test]
fn completions_prompt_shapes() {
    let p = plan();
    let body =
        json!({"prompt": "def fibonacci(n):\n    \"\"\"Return the nth Fibonacci number.\"\"\"\n"});
    assert_eq!(p.classify(&body, Endpoint::Completions).task, Task::Coding);

    let body = json!({"prompt": ["Write a haiku.", "Summarize the plot of Hamlet."]});
    let c = p.classify(&body, Endpoint::Completions);
    assert_eq!(c.task, Task::Summarization);
    // No per-message overhead for completions: ceil((14 + 29) / 4) = 11.
    assert_eq!(c.estimated_prompt_tokens, 11);

    let body = json!({"prompt": [[1, 2, 3], [4, 5]]});
    let c = p.classify(&body, Endpoint::Completions);
    assert_eq!(c.estimated_prompt_tokens, 5);
    assert_eq!(c.task, Task::General);
    let body = json!({"prompt": [10, 11, 12, 13]});
    assert_eq!(
        p.classify(&body, Endpoint::Completions)
            .estimated_prompt_tokens,
        4
    );
}

#[test]
fn responses_shapes() {
    let p = plan();
    let body =
        json!({"model": "m", "input": "Extract the dates from: we met on May 3 and June 9."});
    let c = p.classify(&body, Endpoint::Responses);
    assert_eq!(c.task, Task::Extraction);

    let body = json!({
        "instructions": "You are a math tutor.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi! What shall we study?"}]},
            {"role": "user", "content": "Solve the quadratic equation x^2 - 5x + 6 = 0."},
        ]
    });
    let c = p.classify(&body, Endpoint::Responses);
    assert_eq!(c.task, Task::Math);
    assert!(!c.has_images);
    // chars: 21 + 5 + 24 + 46 = 96 → 24, + 4 × 4 messages (instructions included).
    assert_eq!(c.estimated_prompt_tokens, 24 + 16);

    let body = json!({"input": [
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is in this picture?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        ]},
    ]});
    let c = p.classify(&body, Endpoint::Responses);
    assert!(c.has_images);
    assert_eq!(c.task, Task::Vision);

    // Function calls and their outputs count as tokens but are not user text.
    let body = json!({"input": [
        {"role": "user", "content": "Book a table."},
        {"type": "function_call", "call_id": "c", "name": "book", "arguments": "{\"n\":2}"},
        {"type": "function_call_output", "call_id": "c", "output": "summarize summarize"},
        {"type": "reasoning", "summary": []},
    ]});
    let c = p.classify(&body, Endpoint::Responses);
    assert_eq!(c.task, Task::General);
    // 13 + 4 + 7 + 19 = 43 chars → 11, + 3 messages.
    assert_eq!(c.estimated_prompt_tokens, 11 + 12);
}

#[test]
fn embeddings_shapes() {
    let p = plan();
    for (input, tokens) in [
        (json!("Summarize: the quick brown fox"), 8),
        (json!(["abcd", "efgh", "ij"]), 3),
        (json!([[1, 2, 3], [4, 5]]), 5),
        (json!([1, 2, 3]), 3),
    ] {
        let c = p.classify(&json!({"model": "e", "input": input}), Endpoint::Embeddings);
        assert_eq!(c.task, Task::Embedding);
        assert_eq!(c.complexity, Complexity::Low);
        assert_eq!(c.estimated_prompt_tokens, tokens, "{input}");
    }
}

#[test]
fn anthropic_shapes() {
    let p = plan();
    let body = json!({
        "model": "claude",
        "system": "You are a senior engineer.",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Refactor this function to be iterative."}]
    });
    let c = p.classify(&body, Endpoint::AnthropicMessages);
    assert_eq!(c.task, Task::Coding);
    // 26 + 39 = 65 chars → 17, + 2 messages (system counts as one).
    assert_eq!(c.estimated_prompt_tokens, 17 + 8);

    let body = json!({
        "system": [{"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "TL;DR of the following report please."}]},
        ]
    });
    assert_eq!(
        p.classify(&body, Endpoint::AnthropicMessages).task,
        Task::Summarization
    );

    // Agent loop: the last user message only carries a tool_result; the task
    // comes from the last user-written text, the tool output is not scanned.
    let body = json!({
        "tools": [{"name": "run", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Debug why the tests fail."},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Running them."},
                {"type": "tool_use", "id": "t1", "name": "run", "input": {"cmd": "cargo test"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "summarize summarize summarize"},
            ]},
        ]
    });
    let c = p.classify(&body, Endpoint::AnthropicMessages);
    assert_eq!(c.task, Task::Coding);
    assert!(c.has_tools);
    assert!(!c.has_images);
}

// --------------------------------------------------------------------- images

#[test]
fn images_in_every_format() {
    let p = plan();
    let chat = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Write code for what you see."},
        {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
    ]}]});
    let responses = json!({"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x/cat.png"},
    ]}]});
    let anthropic = json!({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "text", "text": "Describe."},
    ]}]});
    let anthropic_tool_result = json!({"messages": [
        {"role": "user", "content": "Take a screenshot."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "s", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "s", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        ]}]},
    ]});
    for (body, endpoint) in [
        (chat, Endpoint::ChatCompletions),
        (responses, Endpoint::Responses),
        (anthropic, Endpoint::AnthropicMessages),
        (anthropic_tool_result, Endpoint::AnthropicMessages),
    ] {
        let c = p.classify(&body, endpoint);
        assert!(c.has_images, "{body}");
        assert_eq!(c.task, Task::Vision, "{body}");
    }
    // Base64 image data is not counted as text.
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}},
    ]}]});
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions)
            .estimated_prompt_tokens,
        4
    );
}

#[test]
fn vision_complexity_still_reads_the_text() {
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Prove rigorously that the construction in this figure is correct. Derive each step formally."},
        {"type": "image_url", "image_url": {"url": "https://x/fig.png"}},
    ]}]});
    let c = plan().classify(&body, Endpoint::ChatCompletions);
    assert_eq!(c.task, Task::Vision);
    assert!(c.complexity >= Complexity::Medium);
}

// --------------------------------------------------------------------- tokens

#[test]
fn token_estimate_formula() {
    let p = plan();
    // ceil(5 / 4) + 4.
    assert_eq!(chat("hello").estimated_prompt_tokens, 6);
    assert_eq!(chat("").estimated_prompt_tokens, 4);
    let body = json!({"messages": [
        {"role": "system", "content": "abcd"},
        {"role": "user", "content": "abcdefgh"},
        {"role": "assistant", "content": "abc"},
    ]});
    // ceil(15 / 4) + 3 × 4.
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions)
            .estimated_prompt_tokens,
        16
    );

    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    ]);
    let tools_len = serde_json::to_string(&tools).unwrap().len() as u64;
    let body = with(chat_body("hello"), "tools", tools);
    let c = p.classify(&body, Endpoint::ChatCompletions);
    assert!(c.has_tools);
    assert_eq!(c.estimated_prompt_tokens, 6 + tools_len.div_ceil(4));

    // Assistant tool-call names and arguments count too.
    let body = json!({"messages": [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":1}"}}]},
    ]});
    // "f" + "{\"a\":1}" = 8 chars → 2, + 4.
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions)
            .estimated_prompt_tokens,
        6
    );
}

#[test]
fn unicode_prompts_count_chars_not_bytes() {
    // 8 CJK characters = 24 bytes: ceil(8 / 4) + 4.
    let c = chat("请总结这篇文章。");
    assert_eq!(c.estimated_prompt_tokens, 2 + 4);
    // 5 emoji = 20 bytes (4 each): ceil(5 / 4) + 4.
    let c = chat("👍👍👍👍👍");
    assert_eq!(c.estimated_prompt_tokens, 2 + 4);
    assert_eq!(c.task, Task::General);
    // Mixed scripts, emoji and combining marks never panic and English words still count.
    for p in [
        "日本語のテキストを summarize してください 🙏",
        "Ñandú café naïve 👨‍👩‍👧‍👦 ∫ x dx ≤ 1 — « why »",
        "é\u{301}\u{301}\u{301}```\u{1F600}",
        "```日本",
        "\\",
        "1.",
        "#",
        "$",
        "`",
        "``",
        "x^",
        "12 ×",
    ] {
        let c = chat(p);
        assert!(c.estimated_prompt_tokens >= 4, "{p}");
    }
    assert_eq!(
        task_of("日本語のテキストを summarize してください 🙏"),
        Task::Summarization
    );
    // A long CJK text crosses the scan window at a char boundary.
    let long = "数".repeat(10_000);
    assert_eq!(chat(&long).estimated_prompt_tokens, 2_500 + 4);
}

// ----------------------------------------------------------------- complexity

#[test]
fn simple_prompts_are_low() {
    assert_eq!(chat("hi").complexity, Complexity::Low);
    assert_eq!(
        chat("Write a python function to add two numbers.").complexity,
        Complexity::Low
    );
    assert_eq!(
        chat("Summarize this paragraph: cats sleep a lot.").complexity,
        Complexity::Low
    );
}

#[test]
fn prompt_size_raises_complexity() {
    // ~2.5k tokens → Medium, ~10k → High, ~40k → Xhigh.
    for (chars, level) in [
        (10_000, Complexity::Medium),
        (40_000, Complexity::High),
        (160_000, Complexity::Xhigh),
    ] {
        let c = chat(&"lorem ipsum ".repeat(chars / 12));
        assert_eq!(c.complexity, level, "{chars}");
    }
}

#[test]
fn multi_step_and_rigor_raise_complexity() {
    let multi = "First, load the CSV. Then clean the columns. Next, join it with the \
                 orders table. Finally, plot revenue per month.";
    assert_eq!(chat(multi).complexity, Complexity::Medium);
    let list = "Do the following:\n1. Parse the logs\n2. Group errors by service\n\
                3. Find the root cause\n4. Propose fixes\n5. Write a postmortem\n6. Email it";
    assert!(chat(list).complexity >= Complexity::Medium);
    let proof = "Prove rigorously that every bounded monotone sequence converges. \
                 Derive each step formally and state every lemma you use.";
    let c = chat(proof);
    assert_eq!(c.task, Task::Math);
    assert_eq!(c.complexity, Complexity::Medium);
    let both = format!(
        "{proof}\nFirst define the terms, then prove the lemma, next \
                        the theorem, finally discuss edge cases.\n1. a\n2. b\n3. c"
    );
    assert!(chat(&both).complexity >= Complexity::High);
}

#[test]
fn request_fields_raise_complexity() {
    let p = plan();
    let base = chat_body("Write a python function to add two numbers.");
    // coding (1) + max_tokens > 16384 (2) → Medium.
    let body = with(base.clone(), "max_completion_tokens", json!(32_000));
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).complexity,
        Complexity::Medium
    );
    // coding (1) + tools (1) + structured output (1) → Medium.
    let body = with(
        with(
            base.clone(),
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        "response_format",
        json!({"type": "json_object"}),
    );
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).complexity,
        Complexity::Medium
    );
    // Long conversations.
    let mut msgs = Vec::new();
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        msgs.push(json!({"role": role, "content": "ok, and the next python bug?"}));
    }
    let body = json!({"messages": msgs});
    assert_eq!(
        p.classify(&body, Endpoint::ChatCompletions).complexity,
        Complexity::Medium
    );
}

#[test]
fn reasoning_effort_dominates() {
    let p = plan();
    let hi = chat_body("hi");
    let hard = json!({"messages": [{"role": "user", "content":
        "Prove rigorously, formally and with every lemma, that the algorithm is correct. \
         First define it, then state invariants, next prove them, finally derive the bound.\n\
         1. a\n2. b\n3. c"}],
        "max_tokens": 32_000});
    assert!(p.classify(&hard, Endpoint::ChatCompletions).complexity >= Complexity::High);
    for (effort, body, level) in [
        ("high", &hi, Complexity::High),
        ("xhigh", &hi, Complexity::Xhigh),
        ("medium", &hi, Complexity::Low),
        ("low", &hi, Complexity::Low),
        ("low", &hard, Complexity::Medium),
        ("minimal", &hard, Complexity::Medium),
        ("none", &hard, Complexity::Medium),
        ("high", &hard, Complexity::Xhigh),
    ] {
        let body = with(body.clone(), "reasoning_effort", json!(effort));
        let c = p.classify(&body, Endpoint::ChatCompletions);
        if effort == "high" && level == Complexity::Xhigh {
            // High is only a floor.
            assert!(c.complexity >= Complexity::High, "{effort}");
        } else {
            assert_eq!(c.complexity, level, "{effort} {body}");
        }
    }
    // A huge prompt escapes the low-effort cap.
    let huge = with(
        chat_body(&"lorem ipsum ".repeat(15_000)),
        "reasoning_effort",
        json!("low"),
    );
    assert_eq!(
        p.classify(&huge, Endpoint::ChatCompletions).complexity,
        Complexity::Xhigh
    );
    // Responses API: reasoning.effort.
    let body = json!({"input": "hi", "reasoning": {"effort": "xhigh"}});
    assert_eq!(
        p.classify(&body, Endpoint::Responses).complexity,
        Complexity::Xhigh
    );
    let body = json!({"input": "hi", "reasoning": {"effort": "high", "summary": "auto"}});
    let c = p.classify(&body, Endpoint::Responses);
    assert_eq!(c.complexity, Complexity::High);
    assert_eq!(c.task, Task::Reasoning);
    // Anthropic extended thinking budget.
    for (budget, level) in [
        (2_048, Complexity::Low),
        (32_000, Complexity::High),
        (64_000, Complexity::Xhigh),
    ] {
        let body = json!({"max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": budget},
                          "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            p.classify(&body, Endpoint::AnthropicMessages).complexity,
            level,
            "{budget}"
        );
    }
}

#[test]
fn thresholds_are_configurable() {
    let strict = plan_with(json!({"complexity": {"medium": 1, "high": 2, "xhigh": 3}})).unwrap();
    let body = chat_body("Write a python function to add two numbers.");
    assert_eq!(
        strict.classify(&body, Endpoint::ChatCompletions).complexity,
        Complexity::Medium
    );
    let body = with(body, "max_tokens", json!(100_000));
    assert_eq!(
        strict.classify(&body, Endpoint::ChatCompletions).complexity,
        Complexity::Xhigh
    );
    // Partial thresholds keep the other defaults.
    let cfg: ClassifierConfig =
        serde_json::from_value(json!({"complexity": {"xhigh": 20}})).unwrap();
    assert_eq!(
        cfg.complexity,
        ComplexityThresholds {
            medium: 2,
            high: 5,
            xhigh: 20
        }
    );
}

// ---------------------------------------------------------- stream and tools

#[test]
fn stream_and_tools_flags() {
    let p = plan();
    let c = p.classify(
        &with(chat_body("hi"), "stream", json!(true)),
        Endpoint::ChatCompletions,
    );
    assert!(c.stream);
    for v in [json!(false), json!("true"), json!(1), Value::Null] {
        let c = p.classify(
            &with(chat_body("hi"), "stream", v),
            Endpoint::ChatCompletions,
        );
        assert!(!c.stream);
    }
    let c = p.classify(
        &with(chat_body("hi"), "tools", json!([])),
        Endpoint::ChatCompletions,
    );
    assert!(!c.has_tools);
    assert_eq!(c.estimated_prompt_tokens, 5);
    let c = p.classify(
        &with(chat_body("hi"), "tools", json!({"a": 1})),
        Endpoint::ChatCompletions,
    );
    assert!(!c.has_tools);
    let legacy = with(
        chat_body("hi"),
        "functions",
        json!([{"name": "f", "parameters": {}}]),
    );
    assert!(p.classify(&legacy, Endpoint::ChatCompletions).has_tools);
}

// ----------------------------------------------------------------------- tags

fn tagged(plan: &ClassifierPlan, body: &Value) -> Vec<String> {
    plan.classify(body, Endpoint::ChatCompletions).tags
}

#[test]
fn keyword_tags_are_case_insensitive_whole_words() {
    let p = plan_with(json!({"tags": [
        {"name": "lang.rust", "keywords": ["rust", "cargo"]},
        {"name": "cpp", "keywords": ["c++", ".net"]},
        {"name": "refund", "keywords": ["退款", "Erstattung"]},
        {"name": "multi_word", "keywords": ["  credit card  "]},
    ]}))
    .unwrap();
    assert_eq!(
        p.tag_names().collect::<Vec<_>>(),
        ["lang.rust", "cpp", "refund", "multi_word"]
    );
    assert_eq!(tagged(&p, &chat_body("I love RUST!")), ["lang.rust"]);
    assert!(tagged(&p, &chat_body("I trust rusty cargos")).is_empty());
    assert_eq!(tagged(&p, &chat_body("C++ or ASP.NET?")), ["cpp"]);
    assert_eq!(tagged(&p, &chat_body("我想要退款")), ["refund"]);
    assert_eq!(tagged(&p, &chat_body("bitte ERSTATTUNG")), ["refund"]);
    assert_eq!(
        tagged(&p, &chat_body("my Credit Card was charged")),
        ["multi_word"]
    );
    assert_eq!(
        tagged(
            &p,
            &chat_body("cargo build of c++ bindings: credit card 退款")
        ),
        ["lang.rust", "cpp", "refund", "multi_word"]
    );
}

#[test]
fn regex_tags_use_operator_flags() {
    let p = plan_with(json!({"tags": [
        {"name": "order", "regex": [r"\bORD-\d{6}\b"]},
        {"name": "email", "regex": [r"(?i)[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}", "never-matches-xyz"]},
        {"name": "mixed", "keywords": ["invoice"], "regex": ["^URGENT"]},
    ]}))
    .unwrap();
    assert_eq!(tagged(&p, &chat_body("where is ORD-123456?")), ["order"]);
    assert!(tagged(&p, &chat_body("where is ord-123456?")).is_empty());
    assert_eq!(tagged(&p, &chat_body("mail BOB@EXAMPLE.COM")), ["email"]);
    assert_eq!(tagged(&p, &chat_body("URGENT: call me")), ["mixed"]);
    assert_eq!(tagged(&p, &chat_body("the Invoice")), ["mixed"]);
}

#[test]
fn tag_scopes() {
    let p = plan_with(json!({"tags": [
        {"name": "last", "keywords": ["secret"]},
        {"name": "user", "keywords": ["secret"], "scope": "user"},
        {"name": "all", "keywords": ["secret"], "scope": "all"},
    ]}))
    .unwrap();
    let msgs = |system: &str, first: &str, assistant: &str, last: &str, tool: &str| {
        json!({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": first},
            {"role": "assistant", "content": assistant},
            {"role": "tool", "content": tool},
            {"role": "user", "content": [{"type": "text", "text": last}]},
        ]})
    };
    assert_eq!(
        tagged(&p, &msgs("", "", "", "a secret", "")),
        ["last", "user", "all"]
    );
    assert_eq!(
        tagged(&p, &msgs("", "a secret", "", "hello", "")),
        ["user", "all"]
    );
    assert_eq!(tagged(&p, &msgs("secret", "", "", "", "")), ["all"]);
    assert_eq!(tagged(&p, &msgs("", "", "secret", "", "")), ["all"]);
    // Tool results are never tag text.
    assert!(tagged(&p, &msgs("", "", "", "", "secret")).is_empty());

    // Other endpoints: completions / embeddings inputs are user text,
    // Anthropic system and Responses instructions are system text.
    let body = json!({"prompt": ["secret", "b"]});
    assert_eq!(
        p.classify(&body, Endpoint::Completions).tags,
        ["user", "all"]
    );
    let body = json!({"input": ["a", "secret"]});
    assert_eq!(
        p.classify(&body, Endpoint::Embeddings).tags,
        ["last", "user", "all"]
    );
    let body = json!({"system": "secret", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(p.classify(&body, Endpoint::AnthropicMessages).tags, ["all"]);
    let body = json!({"instructions": "secret", "input": "x"});
    assert_eq!(p.classify(&body, Endpoint::Responses).tags, ["all"]);
}

fn config_error(cfg: Value) -> ConfigError {
    match plan_with(cfg) {
        Ok(_) => panic!("config should be refused"),
        Err(e) => e,
    }
}

#[test]
fn tag_validation_names_the_field() {
    let e = config_error(json!({"tags": [{"name": "", "keywords": ["a"]}]}));
    assert_eq!(e.field, "classifier.tags[0].name");
    let e =
        config_error(json!({"tags": [{"name": "ok"}, {"name": "bad name!", "keywords": ["a"]}]}));
    assert_eq!(e.field, "classifier.tags[0]");
    assert!(
        e.message.contains("at least one keyword or regex"),
        "{}",
        e.message
    );
    let e = config_error(
        json!({"tags": [{"name": "a", "keywords": ["x"]}, {"name": "bad name!", "keywords": ["a"]}]}),
    );
    assert_eq!(e.field, "classifier.tags[1].name");
    let e = config_error(json!({"tags": [
        {"name": "dup", "keywords": ["x"]},
        {"name": "dup", "regex": ["y"]},
    ]}));
    assert_eq!(e.field, "classifier.tags[1].name");
    assert!(e.message.contains("duplicate"));
    let e = config_error(json!({"tags": [{"name": "t", "keywords": [], "regex": []}]}));
    assert_eq!(e.field, "classifier.tags[0]");
    let e = config_error(json!({"tags": [{"name": "t", "keywords": ["ok", "  "]}]}));
    assert_eq!(e.field, "classifier.tags[0].keywords[1]");
    let e = config_error(json!({"tags": [{"name": "t", "regex": ["ok", "(unclosed"]}]}));
    assert_eq!(e.field, "classifier.tags[0].regex[1]");
    assert!(e.message.starts_with("invalid regex:"), "{}", e.message);
    assert!(e.message.contains("unclosed group"), "{}", e.message);
    // A pattern too big for the size limit is refused, not compiled.
    let e = config_error(json!({"tags": [{"name": "t", "regex": [r"(?:\w{100}){100}"]}]}));
    assert_eq!(e.field, "classifier.tags[0].regex[0]");
    assert!(e.message.contains("size limit"), "{}", e.message);
    let too_many: Vec<Value> = (0..=MAX_TAGS)
        .map(|i| json!({"name": format!("t{i}"), "keywords": ["x"]}))
        .collect();
    let e = config_error(json!({"tags": too_many}));
    assert_eq!(e.field, "classifier.tags");
}

#[test]
fn a_big_keyword_list_fits_the_size_limit() {
    let keywords: Vec<String> = (0..500).map(|i| format!("keyword{i}")).collect();
    let p = plan_with(json!({"tags": [{"name": "big", "keywords": keywords}]})).unwrap();
    assert_eq!(tagged(&p, &chat_body("has KEYWORD499 in it")), ["big"]);
    assert!(tagged(&p, &chat_body("has keyword5000 in it")).is_empty());
}

#[test]
fn threshold_validation_names_the_field() {
    for (cfg, field) in [
        (json!({"medium": 0}), "classifier.complexity.medium"),
        (
            json!({"medium": 5, "high": 5}),
            "classifier.complexity.high",
        ),
        (json!({"high": 9}), "classifier.complexity.xhigh"),
        (
            json!({"medium": 3, "high": 2, "xhigh": 1}),
            "classifier.complexity.high",
        ),
    ] {
        let e = config_error(json!({ "complexity": cfg }));
        assert_eq!(e.field, field, "{cfg}");
    }
    let cfg: ClassifierConfig = serde_json::from_value(json!({})).unwrap();
    let e = ClassifierPlan::compile(
        &ClassifierConfig {
            complexity: ComplexityThresholds {
                medium: 2,
                high: 1,
                xhigh: 3,
            },
            ..cfg
        },
        "plugin.classifier",
    )
    .err()
    .unwrap();
    assert_eq!(e.field, "plugin.classifier.complexity.high");
}

#[test]
fn unknown_fields_are_refused() {
    for cfg in [
        json!({"tagz": []}),
        json!({"complexity": {"medium": 1, "extreme": 3}}),
        json!({"tags": [{"name": "t", "keywords": ["a"], "case_sensitive": true}]}),
        json!({"tags": [{"name": "t", "keywords": ["a"], "scope": "assistant"}]}),
    ] {
        assert!(
            serde_json::from_value::<ClassifierConfig>(cfg.clone()).is_err(),
            "{cfg}"
        );
    }
    let cfg: ClassifierConfig = serde_json::from_value(json!({
        "tags": [{"name": "t", "keywords": ["a"], "scope": "last_user"}]
    }))
    .unwrap();
    assert_eq!(cfg.tags[0].scope, TagScope::LastUser);
    assert_eq!(
        serde_json::to_value(Task::Summarization).unwrap(),
        json!("summarization")
    );
    assert_eq!(
        serde_json::to_value(Complexity::Xhigh).unwrap(),
        json!("xhigh")
    );
}

// ------------------------------------------------------------ garbage shapes

#[test]
fn garbage_bodies_never_panic() {
    let p = plan_with(json!({"tags": [
        {"name": "a", "keywords": ["x"], "scope": "all"},
        {"name": "b", "regex": ["."], "scope": "user"},
        {"name": "c", "regex": ["."]},
    ]}))
    .unwrap();
    let deep = (0..50).fold(
        json!("text"),
        |acc, _| json!([{"type": "tool_result", "content": [acc, {"type": "image"}]}]),
    );
    let bodies = [
        Value::Null,
        json!(true),
        json!(42),
        json!("a string body"),
        json!([1, 2, 3]),
        json!({}),
        json!({"messages": {"role": "user"}}),
        json!({"messages": "hello"}),
        json!({"messages": [null, 1, "x", [], {}]}),
        json!({"messages": [{"role": 5, "content": {"text": 5}}]}),
        json!({"messages": [{"role": "user", "content": 12}]}),
        json!({"messages": [{"role": "user", "content": {"type": "text", "text": "obj content"}}]}),
        json!({"messages": [{"role": "user", "content": [null, 1, {"type": 3}, {"type": "text", "text": 7},
                                                          {"type": "image_url"}, [], {"type": "tool_result"}]}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [1, {"function": 3}, {"function": {"arguments": {}}}]}]}),
        json!({"messages": [{"role": "user", "content": deep}]}),
        json!({"prompt": {"a": 1}, "input": 3, "system": 4, "instructions": [1]}),
        json!({"prompt": [null, true, {"x": 1}, [1, "a"], 1.5]}),
        json!({"input": [null, 1, {"type": "function_call_output", "output": {"x": 1}}, {"role": []}]}),
        json!({"system": [1, {"type": "text"}], "messages": [{"role": "user", "content": [{"type": "document", "source": 1}]}]}),
        json!({"tools": "x", "functions": 3, "tool_choice": [], "response_format": "json",
               "reasoning_effort": 3, "reasoning": "high", "thinking": {"type": "enabled", "budget_tokens": -5},
               "max_tokens": -1, "max_completion_tokens": "big", "max_output_tokens": 1e30,
               "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"tools": [null], "tool_choice": {"type": null}, "text": {"format": 1}, "output_config": []}),
    ];
    for body in &bodies {
        for endpoint in [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Responses,
            Endpoint::Embeddings,
            Endpoint::AnthropicMessages,
        ] {
            let c = p.classify(body, endpoint);
            assert!(c.complexity <= Complexity::Xhigh);
        }
    }
    let c = p.classify(&Value::Null, Endpoint::ChatCompletions);
    assert_eq!(
        c,
        Classification {
            task: Task::General,
            complexity: Complexity::Low,
            tags: vec![],
            estimated_prompt_tokens: 0,
            has_tools: false,
            has_images: false,
            stream: false,
        }
    );
    // Object content is read as one part.
    let c = p.classify(&bodies[11], Endpoint::ChatCompletions);
    assert_eq!(c.estimated_prompt_tokens, 3 + 4);
}
