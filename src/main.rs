fn main() {
    println!("atrest");
}
